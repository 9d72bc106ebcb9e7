package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/event"
)

// watchKinds maps the CLI's kind word to the admin API path segment.
var watchKinds = map[string]string{
	"build":          "builds",
	"function-build": "function-builds",
}

func runWatch(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return watchCmd(ctx, "watch", http.MethodPut, args, stdout, stderr)
}

func runUnwatch(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return watchCmd(ctx, "unwatch", http.MethodDelete, args, stdout, stderr)
}

// watchCmd registers (PUT) or removes (DELETE) a watch through a running
// relay's admin API.
func watchCmd(ctx context.Context, name, method string, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	addr := fs.String("addr", "http://127.0.0.1:8080", "the relay's HTTP address")
	timeout := fs.Duration("timeout", 10*time.Second, "give up after this long")
	fs.Usage = func() {
		verb := "start following"
		if name == "unwatch" {
			verb = "stop following"
		}
		fmt.Fprintf(stderr, `usage: relay %s [flags] build|function-build ID

Ask a running relay to %s a build (status and log) or a function
build (log) through its admin API. The admin token is read from
RELAY_ADMIN_TOKEN.

Flags:
`, name, verb)
		fs.PrintDefaults()
	}
	// Flags may come before or after the two words.
	pos, code, ok := parseInterspersed(fs, args, stderr)
	if !ok {
		return code
	}
	if len(pos) != 2 {
		fmt.Fprintf(stderr, "relay %s: want a kind and an id, e.g. relay %s build 1f0c...\n", name, name)
		return 2
	}
	seg, ok := watchKinds[pos[0]]
	if !ok {
		fmt.Fprintf(stderr, "relay %s: unknown kind %q; use build or function-build\n", name, pos[0])
		return 2
	}
	id := pos[1]
	if !event.ValidToken(id) {
		fmt.Fprintf(stderr, "relay %s: %q is not a valid id (1-128 of A-Z, a-z, 0-9, _ and -)\n", name, id)
		return 2
	}
	c, ok := newAdminClient(name, *addr, stderr)
	if !ok {
		return 1
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	var answer struct {
		Added bool `json:"added"`
	}
	if _, err := c.do(ctx, method, "/v1/watches/"+seg+"/"+url.PathEscape(id), &answer); err != nil {
		fmt.Fprintf(stderr, "relay %s: %v\n", name, err)
		return 1
	}
	switch {
	case method == http.MethodDelete:
		fmt.Fprintf(stdout, "no longer watching %s %s\n", pos[0], id)
	case answer.Added:
		fmt.Fprintf(stdout, "watching %s %s\n", pos[0], id)
	default:
		fmt.Fprintf(stdout, "already watching %s %s\n", pos[0], id)
	}
	return 0
}
