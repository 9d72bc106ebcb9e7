package main

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/cakework-relay/cakework-relay/internal/httpapi"
	"github.com/cakework-relay/cakework-relay/internal/sinks"
)

// fakeAdmin serves the DLQ admin routes with canned answers.
func fakeAdmin(t *testing.T) (*httptest.Server, *[]string) {
	var mu sync.Mutex
	var calls []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		calls = append(calls, r.Method+" "+r.URL.Path)
		mu.Unlock()
		if r.Header.Get("Authorization") != "Bearer tok" {
			httpapi.WriteError(w, 401, "missing or wrong admin token")
			return
		}
		switch r.Method + " " + r.URL.Path {
		case "GET /v1/dlq":
			httpapi.WriteJSON(w, 200, sinks.ListResponse{Count: 2, DeadLetters: []sinks.DeadLetter{
				{ID: 3, Sink: "app", EventID: "e3", Type: "com.cakework.build.failed", Subject: "b1", Error: "POST http://x: 400 Bad Request", Attempts: 1},
				{ID: 5, Sink: "app", EventID: "e5", Type: "com.cakework.vm.started", Subject: "v1", Error: "gave up", Attempts: 12},
			}})
		case "POST /v1/dlq/3/replay":
			httpapi.WriteJSON(w, 200, sinks.ReplayResult{ID: 3, Outcome: sinks.ReplayDelivered, Sink: "app", EventID: "e3", Attempts: 1})
		case "POST /v1/dlq/5/replay":
			httpapi.WriteJSON(w, 200, sinks.ReplayResult{ID: 5, Outcome: sinks.ReplayDeadLettered, Sink: "app", NewID: 9, Error: "503"})
		default:
			httpapi.WriteError(w, 404, "no such dead letter")
		}
	}))
	t.Cleanup(srv.Close)
	return srv, &calls
}

func TestDLQCommand(t *testing.T) {
	srv, calls := fakeAdmin(t)
	cases := []struct {
		name   string
		token  string
		args   []string
		code   int
		out    string
		errOut string
	}{
		{"help", "tok", []string{"-h"}, 0, "relay dlq list", ""},
		{"list help", "tok", []string{"list", "-h"}, 0, "", "-addr"},
		{"no subcommand", "tok", nil, 2, "", "usage"},
		{"unknown subcommand", "tok", []string{"purge"}, 2, "", "unknown subcommand"},
		{"list", "tok", []string{"list", "-addr", srv.URL}, 0, "build.failed", ""},
		{"list json", "tok", []string{"list", "-json", "-addr", srv.URL}, 0, `"eventId": "e5"`, ""},
		{"no token", "", []string{"list", "-addr", srv.URL}, 1, "", "RELAY_ADMIN_TOKEN"},
		{"wrong token", "nope", []string{"list", "-addr", srv.URL}, 1, "", "admin token"},
		{"replay delivered", "tok", []string{"replay", "-addr", srv.URL, "3"}, 0, "3: delivered", ""},
		{"replay id first", "tok", []string{"replay", "3", "-addr", srv.URL}, 0, "3: delivered", ""},
		{"replay fails again", "tok", []string{"replay", "-addr", srv.URL, "5"}, 1, "", "back in the dead-letter stream as 9"},
		{"replay unknown", "tok", []string{"replay", "-addr", srv.URL, "7"}, 1, "", "no such dead letter"},
		{"replay all", "tok", []string{"replay", "-all", "-addr", srv.URL}, 1, "3: delivered", "as 9"},
		{"replay bad id", "tok", []string{"replay", "-addr", srv.URL, "x"}, 2, "", "not a dead letter ID"},
		{"replay nothing", "tok", []string{"replay", "-addr", srv.URL}, 2, "", "or -all"},
		{"replay both", "tok", []string{"replay", "-all", "-addr", srv.URL, "3"}, 2, "", "or -all"},
		{"relay down", "tok", []string{"list", "-addr", "127.0.0.1:1"}, 1, "", "cannot reach the relay"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv("RELAY_ADMIN_TOKEN", c.token)
			var out, errOut bytes.Buffer
			code := runDLQ(context.Background(), c.args, &out, &errOut)
			if code != c.code || !strings.Contains(out.String(), c.out) || !strings.Contains(errOut.String(), c.errOut) {
				t.Fatalf("exit %d (want %d)\nstdout: %s\nstderr: %s", code, c.code, out.String(), errOut.String())
			}
		})
	}
	_ = calls
}
