package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/cakework-relay/cakework-relay/internal/demo"
)

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	duration := fs.Duration("duration", 0, "stop after this long (e.g. 20s); default: until Ctrl-C")
	data := fs.String("data", "", "keep the relay's data (and the config it used) in this dir; default: a temp dir, removed")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: relay demo [-duration D] [-data DIR]\n\nRuns the Cakework simulator with a synthetic workload and the relay against it,\nprints the status page's address and the token to sign in with, and one\nline per event. No setup needed.")
		fs.PrintDefaults()
	}
	if code, ok := parseFlags(fs, args, stderr); !ok {
		return code
	}
	if fs.NArg() != 0 || *duration < 0 {
		fs.Usage()
		return 2
	}
	if _, err := demo.Run(ctx, demo.Options{Duration: *duration, DataDir: *data, Out: stdout, Log: stderr, Version: version}); err != nil {
		fmt.Fprintln(stderr, "relay demo:", err)
		return 1
	}
	return 0
}
