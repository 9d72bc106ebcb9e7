package poller

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/cakework/cakeworksim"
)

// relay.unwatch.build mirrors relay.watch.build on the real embedded NATS:
// the same request and reply shapes and id checks, and an unwatched build
// is no longer polled. A build that is not watched is an error, as the
// admin API's DELETE answers 404.
func TestNATSUnwatchBuild(t *testing.T) {
	e := newEnv(t, testConfig(), cakeworksim.Options{}).open()
	ts := e.admin(t)
	e.sim.CreateBuild(cakeworksim.BuildSpec{ID: "b1", Manual: true})
	e.sim.CreateBuild(cakeworksim.BuildSpec{ID: "b2", Manual: true})
	req := func(subject, body string) map[string]any {
		t.Helper()
		msg, err := e.bus.Conn().Request(subject, []byte(body), 5*time.Second)
		if err != nil {
			t.Fatalf("%s %s: %v", subject, body, err)
		}
		var out map[string]any
		if err := json.Unmarshal(msg.Data, &out); err != nil {
			t.Fatalf("%s %s: reply is not JSON: %q", subject, body, msg.Data)
		}
		return out
	}
	wantOK := func(subject, body string) {
		t.Helper()
		if got := req(subject, body); len(got) != 1 || got["ok"] != true {
			t.Fatalf("%s %s: %v, want {\"ok\": true}", subject, body, got)
		}
	}
	wantErr := func(subject, body, contains string) {
		t.Helper()
		got := req(subject, body)
		msg, _ := got["error"].(string)
		if len(got) != 1 || !strings.Contains(msg, contains) {
			t.Fatalf("%s %s: %v, want {\"error\": ...%s...}", subject, body, got, contains)
		}
	}
	watched := func() []string {
		t.Helper()
		code, body := call(t, ts, http.MethodGet, "/v1/watches")
		var wl WatchList
		if code != http.StatusOK || json.Unmarshal([]byte(body), &wl) != nil {
			t.Fatalf("GET /v1/watches: %d %s", code, body)
		}
		var ids []string
		for _, w := range wl.Builds {
			ids = append(ids, w.ID)
		}
		return ids
	}

	wantOK(WatchBuildSubject, `{"id":"b1"}`)
	if code, _ := call(t, ts, http.MethodPut, "/v1/watches/builds/b2"); code != http.StatusCreated {
		t.Fatalf("PUT b2: %d", code)
	}
	if got := watched(); strings.Join(got, ",") != "b1,b2" {
		t.Fatalf("watches %v, want b1,b2", got)
	}

	// A watch made over NATS is removed over NATS; one made with the
	// admin API is not (any local process can publish), and the answer
	// is the one for a build that is not watched at all.
	wantOK(UnwatchBuildSubject, `{"id":"b1"}`)
	wantErr(UnwatchBuildSubject, `{"id":"b2"}`, "b2 is not watched over NATS")
	if got := watched(); strings.Join(got, ",") != "b2" {
		t.Fatalf("watches after unwatch: %v, want b2", got)
	}
	if code, _ := call(t, ts, http.MethodDelete, "/v1/watches/builds/b2"); code != http.StatusOK && code != http.StatusNoContent {
		t.Fatalf("DELETE b2: %d", code)
	}
	calls := e.sim.CallCount(cakeworksim.RouteGetBuild)
	e.mustTick(ScheduleBuilds)
	if got := e.sim.CallCount(cakeworksim.RouteGetBuild) - calls; got != 0 {
		t.Fatalf("%d getBuild calls after both builds were unwatched", got)
	}

	wantErr(UnwatchBuildSubject, `{"id":"b1"}`, "b1 is not watched over NATS")
	wantErr(UnwatchBuildSubject, `{"id":"no/slash"}`, "no/slash")
	// The same input errors as relay.watch.build, word for word.
	for _, body := range []string{`{"id":"no/slash"}`, `{"id":""}`, `{}`, `not json`, `{"id":7}`} {
		w, u := req(WatchBuildSubject, body), req(UnwatchBuildSubject, body)
		if w["error"] == nil || w["error"] != u["error"] {
			t.Fatalf("%s: watch answered %v, unwatch %v", body, w, u)
		}
	}
	wantErr(UnwatchBuildSubject, `{}`, `send {"id": "<build id>"}`)
	if got := watched(); len(got) != 0 {
		t.Fatalf("rejected requests changed the watches: %v", got)
	}
}
