package poller

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/cakework"
	"github.com/cakework-relay/cakework-relay/internal/cakework/cakeworksim"
	"github.com/cakework-relay/cakework-relay/internal/health"
	"github.com/cakework-relay/cakework-relay/internal/logtest"
)

// A failing schedule is loud once: WARN with the cause and a fix on the
// first failure, nothing more until health.DefaultRepeat has passed, WARN
// on recovery; "degraded" on the poller's check and status meanwhile.
func TestFailingScheduleWarnsOncePerTransition(t *testing.T) {
	log, rec := logtest.New()
	e := openSweptVM(t, log)
	failing := func() int { return len(rec.Find(slog.LevelWarn, "poller schedule failing")) }
	if n := len(rec.Find(slog.LevelWarn, "")); n != 0 {
		t.Fatalf("warnings while healthy:\n%s", rec)
	}
	if err := e.p.Degraded(); err != nil {
		t.Fatalf("degraded while healthy: %v", err)
	}

	list := []string{cakeworksim.RouteListVMs}
	e.sim.SetFaults(cakeworksim.Faults{Routes: list, FailNext: 1000, ErrorStatus: 503})
	for i := 0; i < 5; i++ {
		e.clk.Advance(10 * time.Second)
		if err := e.tick(ScheduleVMs); err == nil {
			t.Fatal("tick succeeded against a failing API")
		}
	}
	w := rec.Find(slog.LevelWarn, "poller schedule failing")
	if len(w) != 1 {
		t.Fatalf("%d 'failing' warnings for 5 failed ticks, want 1:\n%s", len(w), rec)
	}
	if w[0].Attrs["schedule"] != ScheduleVMs || !strings.Contains(w[0].Attrs["err"], "503") ||
		!strings.Contains(w[0].Attrs["fix"], "Cakework API is failing") {
		t.Fatalf("warning lacks schedule, cause or fix: %+v", w[0])
	}
	err := e.p.Degraded()
	if err == nil || !strings.Contains(err.Error(), "schedule vms failing since") || !strings.Contains(err.Error(), "Cakework API is failing") {
		t.Fatalf("Degraded() = %v", err)
	}
	if strings.Contains(err.Error(), "503") {
		t.Fatalf("Degraded() quotes the error; /readyz answers anyone: %v", err)
	}
	if st := e.p.Status().Schedules[ScheduleVMs]; !strings.Contains(st.LastErr, "503") {
		t.Fatalf("the error is not in the status: %+v", st)
	}
	if st := e.p.Status().Schedules[ScheduleVMs]; !st.Failing || st.FailingSince.IsZero() || st.Hint == "" {
		t.Fatalf("status while failing: %+v", st)
	}
	if e.p.Ready() != nil {
		t.Fatal("a failing upstream made the poller unready; it must only be degraded")
	}

	// A reminder after health.DefaultRepeat, and only one.
	e.clk.Advance(health.DefaultRepeat)
	_ = e.tick(ScheduleVMs)
	e.clk.Advance(10 * time.Second)
	_ = e.tick(ScheduleVMs)
	if n := len(rec.Find(slog.LevelWarn, "poller schedule still failing")); n != 1 || failing() != 1 {
		t.Fatalf("%d reminders, %d 'failing' warnings; want 1 and 1:\n%s", n, failing(), rec)
	}

	e.sim.ClearFaults()
	e.clk.Advance(10 * time.Second)
	e.mustTick(ScheduleVMs)
	e.clk.Advance(10 * time.Second)
	e.mustTick(ScheduleVMs)
	if n := len(rec.Find(slog.LevelWarn, "poller schedule recovered")); n != 1 {
		t.Fatalf("%d 'recovered' warnings, want 1:\n%s", n, rec)
	}
	if err := e.p.Degraded(); err != nil {
		t.Fatalf("still degraded after recovery: %v", err)
	}
	if st := e.p.Status().Schedules[ScheduleVMs]; st.Failing {
		t.Fatalf("status after recovery: %+v", st)
	}
}

// A wrong cakework.url says so.
func TestHintForRefusedConnection(t *testing.T) {
	cfg := testConfig()
	log, rec := logtest.New()
	e := newEnv(t, cfg, cakeworksim.Options{})
	e.noBus, e.logger = true, log
	e.api.Close() // nothing listens there any more
	e.open()
	if err := e.tick(ScheduleVMs); err == nil {
		t.Fatal("tick succeeded with no API")
	}
	w := rec.Find(slog.LevelWarn, "poller schedule failing")
	if len(w) != 1 || !strings.Contains(w[0].Attrs["fix"], "is cakework.url right") {
		t.Fatalf("want one warning naming cakework.url:\n%s", rec)
	}
	if h := cakework.Hint(nil); h != "" {
		t.Fatalf("Hint(nil) = %q", h)
	}
}

// One log stream that always fails backs off, and the ticks that skip it
// make no call: they must not count as a recovery, or the schedule's
// warnings would flap with every backoff.
func TestBackoffIsNotRecovery(t *testing.T) {
	log, rec := logtest.New()
	e := openSweptVM(t, log)
	e.sim.SetFaults(cakeworksim.Faults{Routes: []string{cakeworksim.RouteGetVMLogs}, FailNext: 1 << 30, ErrorStatus: 503})
	calls := 0
	for range 600 { // 10 minutes, a logs tick a second
		e.clk.Advance(time.Second)
		if err := e.tick(ScheduleLogs); err != nil {
			calls++
		}
		if e.p.Degraded() == nil {
			t.Fatalf("degraded cleared while the stream only backed off:\n%s", rec)
		}
	}
	if calls < 100 || calls > 300 {
		t.Fatalf("%d failing ticks in 600: the stream did not back off as expected", calls)
	}
	if n := len(rec.Find(slog.LevelWarn, "poller schedule failing")); n != 1 {
		t.Fatalf("%d 'failing' warnings, want 1:\n%s", n, rec)
	}
	if n := len(rec.Find(slog.LevelWarn, "poller schedule recovered")); n != 0 {
		t.Fatalf("%d 'recovered' warnings while it never recovered:\n%s", n, rec)
	}
	if n := len(rec.Find(slog.LevelWarn, "poller schedule still failing")); n < 1 || n > 2 {
		t.Fatalf("%d reminders in 10 minutes, want 1 or 2:\n%s", n, rec)
	}
	// Fixed: the next call succeeds, and that is the recovery.
	e.sim.ClearFaults()
	e.clk.Advance(10 * time.Second)
	e.mustTick(ScheduleLogs)
	if n := len(rec.Find(slog.LevelWarn, "poller schedule recovered")); n != 1 || e.p.Degraded() != nil {
		t.Fatalf("no recovery after the stream was read again:\n%s", rec)
	}
}
