// Command relay is cakework-relay: it turns Cakework build webhooks and
// polled API state into CloudEvents on NATS JetStream, and fans them out to
// Slack, signed HTTP callbacks and an idle-VM auto-stopper.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"syscall"
)

// Set with -ldflags "-X main.version=... -X main.commit=...".
var (
	version = "dev"
	commit  = ""
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

const usage = `relay: cakework-relay, Cakework events on NATS JetStream

Usage:
  relay serve [-config FILE]          run the daemon
  relay demo [-duration D]            simulator + relay + console output, no setup
  relay simulate [-listen ADDR]       only the Cakework-compatible simulator
  relay check-config FILE             validate a config file
  relay tail [-config FILE] [-server URL] [-subject P] [-json]
  relay watch build ID | relay unwatch build ID
  relay dlq list | relay dlq replay ID|-all
  relay version

Run 'relay COMMAND -h' for a command's flags.
`

type command func(ctx context.Context, args []string, stdout, stderr io.Writer) int

func commands() map[string]command {
	return map[string]command{
		"serve":        runServe,
		"check-config": runCheckConfig,
		"version":      runVersion,
		"simulate":     runSimulate,
		"demo":         runDemo,
		"tail":         runTail,
		"watch":        runWatch,
		"unwatch":      runUnwatch,
		"dlq":          runDLQ,
	}
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	cmd, ok := commands()[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "relay: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	// Only main knows about signals: they become a cancelled context.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return cmd(ctx, args[1:], stdout, stderr)
}

// parseFlags parses fs and maps -h to exit 0 and bad usage to exit 2.
func parseFlags(fs *flag.FlagSet, args []string, stderr io.Writer) (code int, ok bool) {
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, false
		}
		return 2, false
	}
	return 0, true
}

// parseInterspersed parses fs with flags allowed before, between and after
// the positional arguments, and returns those.
func parseInterspersed(fs *flag.FlagSet, args []string, stderr io.Writer) (pos []string, code int, ok bool) {
	for {
		if code, ok := parseFlags(fs, args, stderr); !ok {
			return nil, code, false
		}
		if fs.NArg() == 0 {
			return pos, 0, true
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

func runVersion(_ context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("version", flag.ContinueOnError)
	if code, ok := parseFlags(fs, args, stderr); !ok {
		return code
	}
	c := commit
	if c == "" {
		if bi, ok := debug.ReadBuildInfo(); ok {
			for _, s := range bi.Settings {
				if s.Key == "vcs.revision" {
					c = s.Value
				}
			}
		}
	}
	if c == "" {
		c = "unknown"
	}
	fmt.Fprintf(stdout, "relay %s (commit %s, %s)\n", version, c, runtime.Version())
	return 0
}
