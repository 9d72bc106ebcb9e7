package poller

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cakework-relay/cakework-relay/internal/cakework"
	"github.com/cakework-relay/cakework-relay/internal/cakework/cakeworksim"
	"github.com/cakework-relay/cakework-relay/internal/event"
	"github.com/cakework-relay/cakework-relay/internal/httpapi"
	"github.com/cakework-relay/cakework-relay/internal/state"
)

const adminToken = "admin-secret"

func (e *env) admin(t *testing.T) *httptest.Server {
	t.Helper()
	srv := httpapi.New(httpapi.Options{AdminToken: adminToken})
	e.p.Register(srv)
	ts := httptest.NewServer(srv.Router())
	t.Cleanup(ts.Close)
	return ts
}

func call(t *testing.T, ts *httptest.Server, method, path string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, ts.URL+path, nil)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// A build watched through the admin API goes created -> succeeded, its log
// is tailed from the first line, and the watch is dropped once the log is
// drained. NATS request-reply watches too; a status a webhook already
// recorded is not announced again; stuck fires once.
func TestBuildLifecycle(t *testing.T) {
	e := newEnv(t, testConfig(), cakeworksim.Options{}).open()
	ts := e.admin(t)
	e.sim.CreateBuild(cakeworksim.BuildSpec{ID: "b1", Manual: true})
	e.sim.CreateBuild(cakeworksim.BuildSpec{ID: "b2", Manual: true})
	e.sim.CreateBuild(cakeworksim.BuildSpec{ID: "b3", Manual: true})

	if code, body := call(t, ts, http.MethodPut, "/v1/watches/builds/b1"); code != http.StatusCreated {
		t.Fatalf("PUT: %d %s", code, body)
	}
	if code, _ := call(t, ts, http.MethodPut, "/v1/watches/builds/b1"); code != http.StatusOK {
		t.Fatalf("second PUT: %d", code)
	}
	if code, _ := call(t, ts, http.MethodPut, "/v1/watches/builds/bad.id"); code != http.StatusBadRequest {
		t.Fatalf("bad id: %d", code)
	}
	msg, err := e.bus.Conn().Request(WatchBuildSubject, []byte(`{"id":"b2"}`), 5*time.Second)
	if err != nil || string(msg.Data) != `{"ok":true}` {
		t.Fatalf("NATS watch: %v %s", err, msgData(msg))
	}
	msg, err = e.bus.Conn().Request(WatchBuildSubject, []byte(`{"id":"no/slash"}`), 5*time.Second)
	if err != nil || !strings.Contains(string(msg.Data), `"error"`) {
		t.Fatalf("NATS bad id: %v %s", err, msgData(msg))
	}
	// b3 arrives as ingest records it: status from a webhook, and a watch.
	if err := e.store.Update(context.Background(), func(tx *state.Tx) error {
		if err := tx.PutWatch(state.KindBuild, "b3", state.Watch{Source: "webhook", AddedAt: epoch}); err != nil {
			return err
		}
		return tx.PutBuild("b3", state.BuildState{Status: "created", FirstSeen: epoch, CreatedAt: epoch, ObservedBy: "webhook"})
	}); err != nil {
		t.Fatal(err)
	}

	e.sim.AppendBuildLogs("b1", cakework.LogLine{Message: "step 1"}, cakework.LogLine{Message: "step 2"})
	e.mustTick(ScheduleBuilds)
	e.mustTick(ScheduleLogs)
	e.clk.Advance(time.Second)
	e.mustTick(ScheduleBuilds) // no change: nothing

	e.clk.Advance(time.Second)
	e.sim.AppendBuildLogs("b1", cakework.LogLine{Message: "pushed"})
	e.sim.SetBuildStatus("b1", cakework.BuildSucceeded, "img-1")
	e.sim.SetBuildStatus("b2", cakework.BuildFailed, "")
	e.mustTick(ScheduleBuilds)
	e.mustTick(ScheduleLogs) // reads "pushed"
	e.clk.Advance(time.Second)
	e.mustTick(ScheduleLogs) // drained: b1 and b2 dropped

	code, body := call(t, ts, http.MethodGet, "/v1/watches")
	var wl WatchList
	if code != http.StatusOK || json.Unmarshal([]byte(body), &wl) != nil {
		t.Fatalf("GET /v1/watches: %d %s", code, body)
	}
	if len(wl.Builds) != 1 || wl.Builds[0].ID != "b3" || wl.Builds[0].Status != "created" {
		t.Fatalf("watches after b1/b2 finished: %s", body)
	}
	calls := e.sim.CallCount(cakeworksim.RouteGetBuild)
	e.mustTick(ScheduleBuilds)
	if got := e.sim.CallCount(cakeworksim.RouteGetBuild) - calls; got != 1 {
		t.Fatalf("%d getBuild calls with one unfinished watch", got)
	}

	// b3 has been unfinished since epoch; stuck_after is 30m.
	e.clk.Advance(31 * time.Minute)
	e.mustTick(ScheduleBuilds)
	e.mustTick(ScheduleBuilds)
	if code, _ := call(t, ts, http.MethodDelete, "/v1/watches/builds/b3"); code != http.StatusOK {
		t.Fatalf("DELETE: %d", code)
	}
	if code, _ := call(t, ts, http.MethodDelete, "/v1/watches/builds/b3"); code != http.StatusNotFound {
		t.Fatalf("second DELETE: %d", code)
	}

	evs := e.published("build.")
	want := []string{
		"build.created b1", "build.created b2", "build.failed b2", "build.log b1", "build.log b1",
		"build.stuck b3", "build.succeeded b1",
	}
	if got := summary(evs); !slices.Equal(got, want) {
		t.Fatalf("events:\n got %v\nwant %v", got, want)
	}
	for _, ev := range evs {
		d := data(t, ev)
		switch ev.Action() {
		case "succeeded":
			if d["imageId"] != "img-1" || d["previousStatus"] != "created" || d["observedBy"] != "poller" {
				t.Fatalf("succeeded data %v", d)
			}
			fallthrough
		case "created", "failed":
			if ev.ID != event.BuildStatusID(ev.Subject, ev.Action()) {
				t.Fatalf("%s id %s is not BuildStatusID", ev.Type, ev.ID)
			}
		}
	}
	var lines []string
	for _, l := range logLines(t, evs, "b1") {
		lines = append(lines, l.Message)
	}
	if want := []string{"step 1", "step 2", "pushed"}; !slices.Equal(lines, want) {
		t.Fatalf("b1 log %q", lines)
	}
}

func msgData(m *nats.Msg) string {
	if m == nil {
		return ""
	}
	return string(m.Data)
}

// A function build's log is tailed until it has been quiet for
// FunctionBuildIdle; watching it again resumes without repeating.
func TestFunctionBuildLogs(t *testing.T) {
	e := newEnv(t, testConfig(), cakeworksim.Options{}).open()
	ts := e.admin(t)
	if code, _ := call(t, ts, http.MethodPut, "/v1/watches/function-builds/fb1"); code != http.StatusCreated {
		t.Fatalf("PUT: %d", code)
	}
	e.mustTick(ScheduleLogs) // no log yet (404): not an error
	e.clk.Advance(time.Second)
	e.sim.AppendFunctionBuildLogs("fb1", cakework.LogLine{Message: "a"}, cakework.LogLine{Message: "a"})
	e.mustTick(ScheduleLogs)
	e.clk.Advance(DefaultFunctionBuildIdle + time.Second)
	e.mustTick(ScheduleLogs) // quiet long enough: dropped
	if wl, _ := e.p.Watches(); len(wl.FunctionBuilds) != 0 {
		t.Fatalf("still watched: %+v", wl)
	}
	e.sim.AppendFunctionBuildLogs("fb1", cakework.LogLine{Message: "b"})
	if code, _ := call(t, ts, http.MethodPut, "/v1/watches/function-builds/fb1"); code != http.StatusCreated {
		t.Fatalf("PUT again: %d", code)
	}
	e.mustTick(ScheduleLogs)
	var got []string
	for _, l := range logLines(t, e.published("function_build.log"), "fb1") {
		got = append(got, l.Message)
	}
	if want := []string{"a", "a", "b"}; !slices.Equal(got, want) {
		t.Fatalf("lines %q", got)
	}
}
