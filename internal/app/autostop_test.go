package app

import (
	"context"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cakework-relay/cakework-relay/internal/cakework"
	"github.com/cakework-relay/cakework-relay/internal/cakework/cakeworksim"
	"github.com/cakework-relay/cakework-relay/internal/clock"
	"github.com/cakework-relay/cakework-relay/internal/event"
	"github.com/cakework-relay/cakework-relay/internal/sinks/autostop"
)

// The whole path: the simulator's VMs, the real poller's sweeps and log
// tails, and the auto-stopper acting on that knowledge. Ticks are driven by
// hand on a fake clock.
func TestAutostopOnPollerKnowledge(t *testing.T) {
	t0 := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	clk := clock.NewFake(t0)
	sim := cakeworksim.New(cakeworksim.Options{APIKey: "k", Clock: clk})
	srv := httptest.NewServer(sim.Handler())
	defer srv.Close()
	sim.AddVM(cakework.VM{ID: "quiet", ImageID: "img"})
	sim.AddVM(cakework.VM{ID: "busy", ImageID: "img"})
	sim.SetVMQuiet("quiet", true)

	cfg := testConfig(t)
	cfg.Cakework.URL, cfg.Cakework.APIKey = srv.URL, "k"
	cfg.Cakework.RateLimit = 0
	// Cron stays out of the way; the test ticks.
	cfg.Poller.VMs.Schedule, cfg.Poller.Builds.Schedule, cfg.Poller.Logs.Schedule = "@every 1000h", "@every 1000h", "@every 1000h"
	cfg.Sinks.Autostop.Enabled = true
	cfg.Sinks.Autostop.IdleAfter = 10 * time.Minute
	cfg.Sinks.Autostop.WarnBefore = 2 * time.Minute
	cfg.Sinks.Autostop.Check = 1000 * time.Hour
	a, err := New(Options{Config: cfg, Clock: clk, Components: DefaultComponents(cfg)})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer a.Stop(ctx)
	var as *autostop.AutoStop
	for _, c := range a.components {
		if r, ok := c.(*autostopRunner); ok {
			as = r.as
		}
	}
	p := a.Deps().Poller
	if as == nil || p == nil {
		t.Fatal("auto-stop or poller not running")
	}
	step := func() {
		t.Helper()
		clk.Advance(30 * time.Second)
		sim.AppendVMLogs("busy", cakework.LogLine{Timestamp: clk.Now().UnixMilli(), Level: "info", Message: "GET / 200"})
		if err := p.TickVMs(ctx); err != nil {
			t.Fatal(err)
		}
		if err := p.TickLogs(ctx); err != nil {
			t.Fatal(err)
		}
		if err := as.Check(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 2*13; i++ { // 13 minutes
		step()
	}
	quiet, _ := sim.VM("quiet")
	busy, _ := sim.VM("busy")
	if quiet.State == cakework.VMStarted {
		t.Fatalf("idle VM still %s after 13m (idle_after 10m)", quiet.State)
	}
	if busy.State != cakework.VMStarted {
		t.Fatalf("busy VM was stopped: %s", busy.State)
	}
	if got := sim.CallCount(cakeworksim.RouteStopVM); got != 1 {
		t.Fatalf("stopVM called %d times", got)
	}
	// The warning and the stop reach the stream, with the poller's view of
	// the VM stopping after them.
	if err := a.outbox.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	got := streamTypes(t, a, "cakework.vm.quiet.>")
	want := []string{"vm.idle", "vm.autostopped"}
	if len(got) < 2 || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("events about the idle VM: %v, want %v first", got, want)
	}
	if busyEvents := streamTypes(t, a, "cakework.vm.busy.*.idle"); len(busyEvents) != 0 {
		t.Fatalf("busy VM warned: %v", busyEvents)
	}
}

func streamTypes(t *testing.T, a *App, subject string) []string {
	t.Helper()
	ctx := context.Background()
	c, err := a.Deps().Bus.JetStream().OrderedConsumer(ctx, a.Deps().Bus.Stream(), jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for {
		m, err := c.Next(jetstream.FetchMaxWait(300 * time.Millisecond))
		if err != nil {
			return out
		}
		ev, err := event.Decode(m.Data())
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, ev.ShortType())
	}
}
