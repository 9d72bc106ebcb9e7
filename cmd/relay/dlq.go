package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/sinks"
)

const dlqUsage = `usage:
  relay dlq list [-addr URL] [-sink NAME] [-json]
  relay dlq replay [-addr URL] ID | -all [-sink NAME]

Inspect and re-send dead letters through a running relay's admin API.
The admin token is read from RELAY_ADMIN_TOKEN.
A replay re-sends the event to its sink (with retries); it leaves the
dead-letter stream when delivered, or goes back to it under a new id.
`

func runDLQ(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, dlqUsage)
		return 2
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, dlqUsage)
		return 0
	case "list":
		return dlqList(ctx, args[1:], stdout, stderr)
	case "replay":
		return dlqReplay(ctx, args[1:], stdout, stderr)
	}
	fmt.Fprintf(stderr, "relay dlq: unknown subcommand %q\n\n%s", args[0], dlqUsage)
	return 2
}

func dlqFlags(name string, stderr io.Writer) (*flag.FlagSet, *string, *string) {
	fs := flag.NewFlagSet("dlq "+name, flag.ContinueOnError)
	addr := fs.String("addr", "http://127.0.0.1:8080", "the relay's HTTP address")
	sink := fs.String("sink", "", "only this sink's dead letters")
	fs.Usage = func() {
		fmt.Fprint(stderr, dlqUsage)
		fs.PrintDefaults()
	}
	return fs, addr, sink
}

func (c *adminClient) list(ctx context.Context, sink string) (sinks.ListResponse, error) {
	var l sinks.ListResponse
	q := url.Values{}
	if sink != "" {
		q.Set("sink", sink)
	}
	q.Set("limit", "1000000")
	_, err := c.do(ctx, http.MethodGet, "/v1/dlq?"+q.Encode(), &l)
	return l, err
}

func dlqList(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs, addr, sink := dlqFlags("list", stderr)
	asJSON := fs.Bool("json", false, "print JSON")
	if code, ok := parseFlags(fs, args, stderr); !ok {
		return code
	}
	if fs.NArg() != 0 {
		fs.Usage()
		return 2
	}
	c, ok := newAdminClient("dlq", *addr, stderr)
	if !ok {
		return 1
	}
	l, err := c.list(ctx, *sink)
	if err != nil {
		fmt.Fprintln(stderr, "relay dlq list:", err)
		return 1
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(l.DeadLetters)
		return 0
	}
	if len(l.DeadLetters) == 0 {
		fmt.Fprintln(stdout, "no dead letters")
		return 0
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSINK\tTIME\tTYPE\tSUBJECT\tATTEMPTS\tEVENT ID\tERROR")
	for _, d := range l.DeadLetters {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", d.ID, d.Sink, d.Time.Format(time.RFC3339), strings.TrimPrefix(d.Type, "com.cakework."),
			d.Subject, d.Attempts, d.EventID, oneLine(d.Error, 120))
	}
	tw.Flush()
	return 0
}

func oneLine(s string, n int) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

func dlqReplay(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs, addr, sink := dlqFlags("replay", stderr)
	all := fs.Bool("all", false, "replay every dead letter (of -sink, if given)")
	// Accept "replay ID -addr X" as well as "replay -addr X ID".
	ids, code, ok := parseInterspersed(fs, args, stderr)
	if !ok {
		return code
	}
	if *all == (len(ids) > 0) || len(ids) > 1 {
		fmt.Fprintln(stderr, "relay dlq replay: give one dead letter ID (from 'relay dlq list') or -all")
		fs.Usage()
		return 2
	}
	var targets []uint64
	if len(ids) == 1 {
		id, err := strconv.ParseUint(ids[0], 10, 64)
		if err != nil || id == 0 {
			fmt.Fprintf(stderr, "relay dlq replay: %q is not a dead letter ID (a positive number from 'relay dlq list')\n", ids[0])
			return 2
		}
		targets = []uint64{id}
	}
	c, ok := newAdminClient("dlq", *addr, stderr)
	if !ok {
		return 1
	}
	if *all {
		l, err := c.list(ctx, *sink)
		if err != nil {
			fmt.Fprintln(stderr, "relay dlq replay:", err)
			return 1
		}
		for _, d := range l.DeadLetters {
			targets = append(targets, d.ID)
		}
		if len(targets) == 0 {
			fmt.Fprintln(stdout, "no dead letters")
			return 0
		}
	}
	failed := 0
	for _, id := range targets {
		if ctx.Err() != nil {
			fmt.Fprintln(stderr, "relay dlq replay: interrupted")
			return 1
		}
		var res sinks.ReplayResult
		_, err := c.do(ctx, http.MethodPost, fmt.Sprintf("/v1/dlq/%d/replay", id), &res)
		switch {
		case err != nil:
			failed++
			fmt.Fprintf(stderr, "%d: %v\n", id, err)
		case res.Outcome == sinks.ReplayDelivered:
			fmt.Fprintf(stdout, "%d: delivered to %s (event %s, %d attempt(s))\n", id, res.Sink, res.EventID, res.Attempts)
			if res.Error != "" {
				fmt.Fprintf(stderr, "%d: %s\n", id, res.Error)
			}
		case res.Outcome == sinks.ReplayDeadLettered:
			failed++
			fmt.Fprintf(stderr, "%d: failed again, back in the dead-letter stream as %d: %s\n", id, res.NewID, res.Error)
		case res.Outcome == sinks.ReplayInProgress:
			failed++
			fmt.Fprintf(stderr, "%d: still retrying in the relay; check 'relay dlq list' later\n", id)
		default:
			failed++
			fmt.Fprintf(stderr, "%d: %s: %s\n", id, res.Outcome, res.Error)
		}
	}
	if failed > 0 {
		return 1
	}
	return 0
}
