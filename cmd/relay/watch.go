package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
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
	var pos []string
	for {
		if code, ok := parseFlags(fs, args, stderr); !ok {
			return code
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
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
	if !validID(id) {
		fmt.Fprintf(stderr, "relay %s: %q is not a valid id (1-128 of A-Z, a-z, 0-9, _ and -)\n", name, id)
		return 2
	}
	base, err := url.Parse(strings.TrimSuffix(*addr, "/"))
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		fmt.Fprintf(stderr, "relay %s: -addr %q must be an http(s) URL such as http://127.0.0.1:8080\n", name, *addr)
		return 2
	}
	token := os.Getenv("RELAY_ADMIN_TOKEN")
	if token == "" {
		fmt.Fprintf(stderr, "relay %s: RELAY_ADMIN_TOKEN is not set; export the relay's http.admin_token\n", name)
		return 1
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	target := base.String() + "/v1/watches/" + seg + "/" + url.PathEscape(id)
	req, err := http.NewRequestWithContext(ctx, method, target, nil)
	if err != nil {
		fmt.Fprintf(stderr, "relay %s: %v\n", name, err)
		return 1
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		fmt.Fprintf(stderr, "relay %s: cannot reach the relay at %s: %v\n", name, base, err)
		return 1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var answer struct {
		Added   bool   `json:"added"`
		Removed bool   `json:"removed"`
		Error   string `json:"error"`
	}
	_ = json.Unmarshal(body, &answer)
	if resp.StatusCode/100 != 2 {
		msg := answer.Error
		if msg == "" {
			msg = strings.TrimSpace(string(body))
		}
		fmt.Fprintf(stderr, "relay %s: %s: %s\n", name, resp.Status, msg)
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

func validID(s string) bool {
	if len(s) == 0 || len(s) > 128 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}
