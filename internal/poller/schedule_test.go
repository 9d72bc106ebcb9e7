package poller

import (
	"context"
	"testing"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/cakework/cakeworksim"
)

// Cron drives the ticks; Stop waits for a running tick up to
// shutdown_timeout, then cancels it, and that is a clean stop.
func TestSchedulerAndBoundedShutdown(t *testing.T) {
	cfg := testConfig()
	cfg.VMs.Schedule = "@every 1s"
	cfg.ShutdownTimeout = 300 * time.Millisecond
	e := newEnv(t, cfg, cakeworksim.Options{})
	e.noBus = true
	e.open()
	// Every list call now hangs (latency on the sim's fake clock).
	e.sim.SetFaults(cakeworksim.Faults{Latency: time.Hour})
	deadline := time.Now().Add(5 * time.Second)
	for e.sim.CallCount(cakeworksim.RouteListVMs) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("cron never ran the VM sweep")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// A direct tick while the scheduled one runs is refused: no overlap.
	if err := e.p.TickVMs(context.Background()); err != ErrTickRunning {
		t.Fatalf("overlapping tick: %v", err)
	}
	start := time.Now()
	err := e.p.Stop(context.Background())
	took := time.Since(start)
	// The tick was cancelled at the timeout; that is a clean stop.
	if err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if took < 250*time.Millisecond || took > 3*time.Second {
		t.Fatalf("Stop took %s with a 300ms shutdown timeout", took)
	}
	if err := e.p.TickVMs(context.Background()); err != ErrStopped {
		t.Fatalf("tick after Stop: %v", err)
	}
	if s := e.p.Status().Schedules[ScheduleVMs]; s.Errors != 1 {
		t.Fatalf("the cancelled tick is not counted: %+v", s)
	}
}
