package poller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/cakework-relay/cakework-relay/internal/cakework/cakeworksim"
	"github.com/cakework-relay/cakework-relay/internal/logtest"
	"github.com/cakework-relay/cakework-relay/internal/state"
)

// queueWatches queues build watches as ingest does for webhooks.
func queueWatches(t *testing.T, e *env, ids ...string) {
	t.Helper()
	if err := e.store.Accept(context.Background(), func(tx *state.AcceptTx) error {
		for _, id := range ids {
			raw, err := state.EncodeQueuedWatch(state.KindBuild, id, state.Watch{Source: "webhook", AddedAt: e.clk.Now()})
			if err != nil {
				return err
			}
			if err := tx.QueueWatch(raw); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

func TestWatchedBuildsAreCapped(t *testing.T) {
	cfg := testConfig()
	cfg.Builds.MaxWatched = 3
	log, rec := logtest.New()
	e := newEnv(t, cfg, cakeworksim.Options{})
	e.noBus, e.logger = true, log
	e.open()
	ts := e.admin(t)
	for _, id := range []string{"b1", "b2", "b3", "b4", "b5"} {
		e.sim.CreateBuild(cakeworksim.BuildSpec{ID: id, Manual: true})
	}
	queueWatches(t, e, "b1", "b2", "b3", "b4", "b5")
	e.mustTick(ScheduleBuilds)
	l, err := e.p.Watches()
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Builds) != 3 {
		t.Fatalf("%d builds watched, want the cap, 3", len(l.Builds))
	}
	st := e.p.Status()
	if st.WatchedBuilds != 3 || st.MaxWatchedBuilds != 3 || st.WatchesRefused != 2 {
		t.Fatalf("status: watched %d of %d, refused %d; want 3 of 3, 2", st.WatchedBuilds, st.MaxWatchedBuilds, st.WatchesRefused)
	}
	if got := testutil.ToFloat64(e.p.m.watchesRefused); got != 2 {
		t.Fatalf("relay_poller_watches_refused_total %v", got)
	}
	if got := testutil.ToFloat64(e.p.m.watched); got != 3 {
		t.Fatalf("relay_poller_watched_builds %v", got)
	}
	if n := len(rec.Find(slog.LevelWarn, "the build watch list is full")); n != 1 {
		t.Fatalf("%d 'full' warnings, want 1:\n%s", n, rec)
	}
	// The admin API is refused too, and says why; a build already watched
	// is fine.
	code, body := call(t, ts, http.MethodPut, "/v1/watches/builds/b9")
	if code != http.StatusConflict || !strings.Contains(body, "poller.builds.max_watched") {
		t.Fatalf("PUT past the cap: %d %s", code, body)
	}
	if _, err := e.p.Watch(context.Background(), state.KindBuild, l.Builds[0].ID, SourceAdmin); err != nil {
		t.Fatalf("re-watching a watched build: %v", err)
	}
	// Room again once one goes.
	if _, err := e.p.Unwatch(context.Background(), state.KindBuild, l.Builds[0].ID); err != nil {
		t.Fatal(err)
	}
	if code, body := call(t, ts, http.MethodPut, "/v1/watches/builds/b9"); code != http.StatusCreated {
		t.Fatalf("PUT under the cap: %d %s", code, body)
	}
}

// One stray build (a webhook for a build Cakework does not know) neither
// fails the builds nor the logs schedule; it is dropped after
// drop_unknown_after, logged once, and forgotten.
func TestStrayBuildIsDroppedAndNeverFailsASchedule(t *testing.T) {
	cfg := testConfig()
	cfg.Builds.DropUnknownAfter = 2 * time.Minute
	log, rec := logtest.New()
	e := newEnv(t, cfg, cakeworksim.Options{})
	e.noBus, e.logger = true, log
	e.open()
	e.sim.CreateBuild(cakeworksim.BuildSpec{ID: "real", Manual: true})
	queueWatches(t, e, "stray", "real")
	for i := 0; i < 40; i++ { // 200 s
		e.mustTick(ScheduleBuilds)
		e.mustTick(ScheduleLogs)
		e.clk.Advance(5 * time.Second)
	}
	for _, name := range []string{ScheduleBuilds, ScheduleLogs} {
		st := e.p.Status().Schedules[name]
		if st.Errors != 0 || st.Failing || !st.LastSuccess.After(epoch.Add(190*time.Second)) {
			t.Fatalf("schedule %s with a stray build: %+v", name, st)
		}
	}
	if err := e.p.Degraded(); err != nil {
		t.Fatalf("degraded by a stray build: %v", err)
	}
	l, err := e.p.Watches()
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Builds) != 1 || l.Builds[0].ID != "real" {
		t.Fatalf("watches after drop_unknown_after: %+v", l.Builds)
	}
	drops := rec.Find(slog.LevelWarn, "dropped the watch on a build Cakework does not know")
	if len(drops) != 1 || drops[0].Attrs["build"] != "stray" {
		t.Fatalf("want one drop line for stray:\n%s", rec)
	}
	if st := e.p.Status(); st.WatchesDroppedUnknown != 1 {
		t.Fatalf("status: %d dropped", st.WatchesDroppedUnknown)
	}
	if got := testutil.ToFloat64(e.p.m.streamsGone.WithLabelValues(state.KindBuild)); got == 0 {
		t.Fatal("the stray build's 404 log stream was not counted")
	}
	e.p.backoffMu.Lock()
	for k := range e.p.backoffs {
		if strings.Contains(k, "stray") {
			t.Errorf("backoff for %s kept after the watch was dropped", k)
		}
	}
	e.p.backoffMu.Unlock()
	if len(rec.Find(slog.LevelWarn, "")) != 1 {
		t.Fatalf("other warnings:\n%s", rec)
	}
}

// A tick reads the watch list a page at a time and still reaches every
// build.
func TestBuildsTickReadsWatchesInPages(t *testing.T) {
	defer func(n int) { watchPage = n }(watchPage)
	watchPage = 2
	e := newEnv(t, testConfig(), cakeworksim.Options{})
	e.noBus = true
	e.open()
	var ids []string
	for i := range 7 {
		id := fmt.Sprintf("b%d", i)
		e.sim.CreateBuild(cakeworksim.BuildSpec{ID: id, Manual: true})
		ids = append(ids, id)
	}
	queueWatches(t, e, ids...)
	e.sim.ResetCalls()
	e.mustTick(ScheduleBuilds)
	if got := e.sim.Calls()[cakeworksim.RouteGetBuild]; got != 7 {
		t.Fatalf("%d getBuild calls in one tick, want 7", got)
	}
	e.mustTick(ScheduleLogs)
	for _, id := range ids {
		if !e.p.due("logs/build/" + id) {
			t.Fatalf("build %s's log not read", id)
		}
	}
	if got := e.sim.Calls()[cakeworksim.RouteGetBuildLogs]; got < 7 {
		t.Fatalf("%d build log calls in one tick, want 7 or more", got)
	}
}

// Backoffs of resources no tick calls any more are pruned.
func TestStaleBackoffsArePruned(t *testing.T) {
	e := newEnv(t, testConfig(), cakeworksim.Options{})
	e.noBus = true
	e.open()
	e.p.failed("getVM/gone", errors.New("boom"))
	e.clk.Advance(staleBackoff + time.Minute)
	e.mustTick(ScheduleBuilds)
	e.p.backoffMu.Lock()
	defer e.p.backoffMu.Unlock()
	if len(e.p.backoffs) != 0 {
		t.Fatalf("backoffs kept: %v", e.p.backoffs)
	}
}
