package poller

import (
	"testing"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/cakework"
	"github.com/cakework-relay/cakework-relay/internal/cakework/cakeworksim"
)

// A scheduled tick waits a random delay up to poller.jitter, on the
// injected clock, before it calls the API.
func TestJitterDelaysScheduledTicks(t *testing.T) {
	cfg := testConfig()
	cfg.Jitter = time.Minute
	e := newEnv(t, cfg, cakeworksim.Options{})
	e.noBus = true
	e.open()
	e.sim.AddVM(cakework.VM{ID: "v1"})
	done := make(chan struct{})
	go func() { e.p.scheduled(e.p.sched[ScheduleVMs]); close(done) }()
	// Wait until the tick is parked on the clock.
	deadline := time.Now().Add(5 * time.Second)
	for e.clk.Waiters() == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if e.clk.Waiters() == 0 {
		t.Fatal("scheduled tick did not wait for its jitter")
	}
	if n := e.sim.CallCount(cakeworksim.RouteListVMs); n != 0 {
		t.Fatalf("%d listVMs calls before the jitter elapsed", n)
	}
	e.clk.Advance(time.Minute)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("tick did not run after the jitter")
	}
	if n := e.sim.CallCount(cakeworksim.RouteListVMs); n == 0 {
		t.Fatal("no sweep after the jitter")
	}
}
