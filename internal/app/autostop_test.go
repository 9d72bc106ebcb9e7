package app

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cakework-relay/cakework-relay/internal/cakework"
	"github.com/cakework-relay/cakework-relay/internal/cakework/cakeworksim"
	"github.com/cakework-relay/cakework-relay/internal/clock"
	"github.com/cakework-relay/cakework-relay/internal/event"
	"github.com/cakework-relay/cakework-relay/internal/sinks/autostop"
	"github.com/cakework-relay/cakework-relay/internal/state"
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

// A build seen by webhook is watched by the poller (through the watch
// queue), which confirms it, records its state, tails its log, and drops the
// watch; the stream has its success once.
func TestWebhookBuildIsConfirmedByThePoller(t *testing.T) {
	t0 := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	clk := clock.NewFake(t0)
	sim := cakeworksim.New(cakeworksim.Options{APIKey: "k", Clock: clk, LogBatchMin: 1})
	srv := httptest.NewServer(sim.Handler())
	defer srv.Close()
	b := sim.CreateBuild(cakeworksim.BuildSpec{ID: "b-web", Manual: true})
	sim.AppendBuildLogs(b.BuildID, cakework.LogLine{Timestamp: t0.UnixMilli(), Level: "info", Message: "step 1/1"})
	sim.SetBuildStatus(b.BuildID, "succeeded", "img-1")

	cfg := testConfig(t)
	cfg.Cakework.URL, cfg.Cakework.APIKey, cfg.Cakework.RateLimit = srv.URL, "k", 0
	cfg.Poller.VMs.Schedule, cfg.Poller.Builds.Schedule, cfg.Poller.Logs.Schedule = "@every 1000h", "@every 1000h", "@every 1000h"
	cfg.Ingest.Cakework.Configured, cfg.Ingest.Cakework.Token = true, "tok"
	a, err := New(Options{Config: cfg, Clock: clk, Components: DefaultComponents(cfg)})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer a.Stop(ctx)
	resp, err := http.Post("http://"+a.HTTPAddr()+"/webhooks/cakework/build/succeeded?token=tok", "application/json",
		strings.NewReader(`{"buildId":"b-web","imageId":"img-1"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("webhook: %d", resp.StatusCode)
	}
	p := a.Deps().Poller
	for i := 0; i < 3; i++ {
		clk.Advance(5 * time.Second)
		if err := p.TickBuilds(ctx); err != nil {
			t.Fatal(err)
		}
		if err := p.TickLogs(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.outbox.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	got := streamTypes(t, a, "cakework.build.b-web.>")
	count := map[string]int{}
	for _, typ := range got {
		count[typ]++
	}
	if count["build.succeeded"] != 1 || count["build.log"] != 1 {
		t.Fatalf("events about the build: %v", got)
	}
	err = a.Deps().Store.View(func(tx *state.Tx) error {
		st, ok, err := tx.GetBuild("b-web")
		if !ok || err != nil || st.Status != "succeeded" || st.ObservedBy != "poller" {
			t.Errorf("poller's build state: %+v %v %v", st, ok, err)
		}
		if _, watched, _ := tx.GetWatch(state.KindBuild, "b-web"); watched {
			t.Error("finished, drained build still watched")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
