package app

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cakework-relay/cakework-relay/internal/autostop"
	"github.com/cakework-relay/cakework-relay/internal/cakework"
	"github.com/cakework-relay/cakework-relay/internal/cakework/cakeworksim"
	"github.com/cakework-relay/cakework-relay/internal/clock"
	"github.com/cakework-relay/cakework-relay/internal/config"
	"github.com/cakework-relay/cakework-relay/internal/event"
	"github.com/cakework-relay/cakework-relay/internal/poller"
	"github.com/cakework-relay/cakework-relay/internal/state"
)

// simConfig is testConfig with the Cakework API served by sim (key "k", no
// rate limit) through a server that closes with the test, and every
// poller schedule far off.
func simConfig(t *testing.T, sim *cakeworksim.Sim) *config.Config {
	t.Helper()
	srv := httptest.NewServer(sim.Handler())
	t.Cleanup(srv.Close)
	cfg := testConfig(t)
	cfg.Cakework.URL, cfg.Cakework.APIKey, cfg.Cakework.RateLimit = srv.URL, "k", 0
	cfg.Poller.VMs.Schedule, cfg.Poller.Builds.Schedule, cfg.Poller.Logs.Schedule = "@every 1000h", "@every 1000h", "@every 1000h"
	return cfg
}

// autostopApp runs the whole relay in-process on a fake clock against sim,
// with auto-stop on (idleAfter, warnBefore), every poller schedule and the
// auto-stop check far off: the test ticks the poller by hand (each tick
// still kicks the auto-stopper, as in production).
func autostopApp(t *testing.T, clk *clock.Fake, sim *cakeworksim.Sim, idleAfter, warnBefore time.Duration) (*App, *poller.Poller, *autostop.AutoStop) {
	t.Helper()
	cfg := simConfig(t, sim)
	cfg.Sinks.Autostop.Enabled = true
	cfg.Sinks.Autostop.IdleAfter = idleAfter
	cfg.Sinks.Autostop.WarnBefore = warnBefore
	cfg.Sinks.Autostop.Check = 1000 * time.Hour
	a := startApp(t, Options{Config: cfg, Clock: clk})
	var as *autostop.AutoStop
	for _, c := range a.components {
		if r, ok := c.(*autostopRunner); ok {
			as = r.as
		}
	}
	p := a.Producers().Poller
	if as == nil || p == nil {
		t.Fatal("auto-stop or poller not running")
	}
	return a, p, as
}

// The whole path: the simulator's VMs, the real poller's sweeps and log
// tails, and the auto-stopper acting on that knowledge. Ticks are driven by
// hand on a fake clock.
func TestAutostopOnPollerKnowledge(t *testing.T) {
	t0 := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	clk := clock.NewFake(t0)
	sim := cakeworksim.New(cakeworksim.Options{APIKey: "k", Clock: clk})
	sim.AddVM(cakework.VM{ID: "quiet", ImageID: "img"})
	sim.AddVM(cakework.VM{ID: "busy", ImageID: "img"})
	sim.SetVMQuiet("quiet", true)
	a, p, as := autostopApp(t, clk, sim, 10*time.Minute, 2*time.Minute)
	ctx := context.Background()
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
	// The warning, then the stop, reach the stream. The poller's
	// vm.destroyed may come before vm.autostopped: the app's own scheduled
	// sweep (on this fake clock too) can read the VM between the stop call
	// and auto-stop's commit, as in production (README "Auto-stop").
	if err := a.outbox.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	got := streamTypes(t, a, "cakework.vm.quiet.>")
	stops := 0
	for _, ty := range got {
		if ty == "vm.autostopped" {
			stops++
		}
	}
	if len(got) < 2 || got[0] != "vm.idle" || stops != 1 {
		t.Fatalf("events about the idle VM: %v, want vm.idle first, then one vm.autostopped", got)
	}
	if busyEvents := streamTypes(t, a, "cakework.vm.busy.*.idle"); len(busyEvents) != 0 {
		t.Fatalf("busy VM warned: %v", busyEvents)
	}
}

// A VM whose log polls fail (500) and then back off is one the relay cannot
// see: the real poller makes no call during the backoff, so no failure
// restarts the idle clock, yet no vm.idle goes out and nothing is stopped.
// Once a poll reads its log to the end again, it is warned idle_after -
// warn_before after that and stopped idle_after after it.
func TestBlindVMGetsNoIdleWarning(t *testing.T) {
	t0 := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	clk := clock.NewFake(t0)
	sim := cakeworksim.New(cakeworksim.Options{APIKey: "k", Clock: clk})
	sim.AddVM(cakework.VM{ID: "blind", ImageID: "img"})
	sim.SetVMQuiet("blind", true)
	const idleAfter, warnBefore = 6 * time.Second, 3 * time.Second
	a, p, as := autostopApp(t, clk, sim, idleAfter, warnBefore)
	ctx := context.Background()
	step := func() {
		t.Helper()
		clk.Advance(time.Second)
		if err := p.TickVMs(ctx); err != nil {
			t.Fatal(err)
		}
		_ = p.TickLogs(ctx) // fails while the log route does
		if err := as.Check(ctx); err != nil {
			t.Fatal(err)
		}
	}
	step() // the baseline
	sim.SetFaults(cakeworksim.Faults{Routes: []string{cakeworksim.RouteGetVMLogs}, ErrorRate: 1})
	const blindSteps = 120
	for range blindSteps {
		step()
	}
	if calls := sim.CallCount(cakeworksim.RouteGetVMLogs); calls == 0 || calls > blindSteps/4 {
		t.Fatalf("%d log calls in %d polls: the stream did not fail and back off", calls, blindSteps)
	}
	if err := a.outbox.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	if evs := streamTypes(t, a, "cakework.vm.blind.>"); len(evs) != 0 {
		t.Fatalf("events about a VM whose logs could not be read: %v", evs)
	}
	if sim.CallCount(cakeworksim.RouteStopVM) != 0 {
		t.Fatal("stopped a VM whose logs could not be read")
	}

	sim.ClearFaults()
	var recovered time.Time
	for i := 0; i < 600 && sim.CallCount(cakeworksim.RouteStopVM) == 0; i++ {
		step()
		if k := p.VMKnowledge("blind"); recovered.IsZero() && !k.LogFailing {
			recovered = k.LogRecovered
		}
	}
	if recovered.IsZero() {
		t.Fatal("the log was never read to the end again")
	}
	if err := a.outbox.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	var evs []event.Event
	for _, ev := range streamEvents(t, a, "cakework.vm.blind.>") {
		if ev.Action() == "idle" || ev.Action() == "autostopped" {
			evs = append(evs, ev)
		}
	}
	if len(evs) != 2 || evs[0].ShortType() != "vm.idle" || evs[1].ShortType() != "vm.autostopped" {
		t.Fatalf("auto-stop events about the VM once seen again: %d, want vm.idle then vm.autostopped", len(evs))
	}
	if warned := evs[0].Time.Sub(recovered); warned < idleAfter-warnBefore {
		t.Fatalf("warned %v after its log was read again, want at least %v", warned, idleAfter-warnBefore)
	}
	if stopped := evs[1].Time.Sub(recovered); stopped < idleAfter {
		t.Fatalf("stopped %v after its log was read again, want at least %v", stopped, idleAfter)
	}
}

func streamTypes(t *testing.T, a *App, subject string) []string {
	t.Helper()
	var out []string
	for _, ev := range streamEvents(t, a, subject) {
		out = append(out, ev.ShortType())
	}
	return out
}

// streamEvents reads the events on subject from the relay's stream.
func streamEvents(t *testing.T, a *App, subject string) []event.Event {
	t.Helper()
	ctx := context.Background()
	c, err := a.Core().Bus.JetStream().OrderedConsumer(ctx, a.Core().Bus.Stream(), jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	if err != nil {
		t.Fatal(err)
	}
	var out []event.Event
	for {
		m, err := c.Next(jetstream.FetchMaxWait(300 * time.Millisecond))
		if err != nil {
			return out
		}
		ev, err := event.Decode(m.Data())
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, ev)
	}
}

// A build seen by webhook is watched by the poller (through the watch
// queue), which confirms it, records its state, tails its log, and drops the
// watch; the stream has its success once.
func TestWebhookBuildIsConfirmedByThePoller(t *testing.T) {
	t0 := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	clk := clock.NewFake(t0)
	sim := cakeworksim.New(cakeworksim.Options{APIKey: "k", Clock: clk, LogBatchMin: 1})
	b := sim.CreateBuild(cakeworksim.BuildSpec{ID: "b-web", Manual: true})
	sim.AppendBuildLogs(b.BuildID, cakework.LogLine{Timestamp: t0.UnixMilli(), Level: "info", Message: "step 1/1"})
	sim.SetBuildStatus(b.BuildID, "succeeded", "img-1")

	cfg := simConfig(t, sim)
	cfg.Ingest.Cakework.Configured, cfg.Ingest.Cakework.Token = true, "tok"
	a := startApp(t, Options{Config: cfg, Clock: clk})
	resp, err := http.Post("http://"+a.HTTPAddr()+"/webhooks/cakework/build/succeeded?token=tok", "application/json",
		strings.NewReader(`{"buildId":"b-web","imageId":"img-1"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("webhook: %d", resp.StatusCode)
	}
	ctx := context.Background()
	p := a.Producers().Poller
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
	err = a.Core().Store.View(func(tx *state.Tx) error {
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

// Activity signals count only for VMs the poller knows: a made-up id is
// refused (404) and writes nothing, and the records of VMs the poller no
// longer knows are pruned.
func TestActivityCountsOnlyForKnownVMs(t *testing.T) {
	clk := clock.NewFake(time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC))
	sim := cakeworksim.New(cakeworksim.Options{APIKey: "k", Clock: clk})
	a, p, _ := autostopApp(t, clk, sim, time.Hour, 10*time.Minute)
	sim.AddVM(cakework.VM{ID: "vm-1"})
	if err := p.TickVMs(context.Background()); err != nil {
		t.Fatal(err)
	}
	post := func(id string) int {
		req, _ := http.NewRequest(http.MethodPost, "http://"+a.HTTPAddr()+"/v1/vms/"+id+"/activity", nil)
		req.Header.Set("Authorization", "Bearer admintoken")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	if code := post("vm-1"); code != http.StatusOK {
		t.Fatalf("activity for a known VM: %d", code)
	}
	if code := post("vm-made-up"); code != http.StatusNotFound {
		t.Fatalf("activity for an unknown VM: %d, want 404", code)
	}
	records := func() []string {
		var ids []string
		if err := a.Core().Store.View(func(tx *state.Tx) error {
			return tx.ForEachSink(autostop.SinkName, func(k string, _ []byte) error {
				ids = append(ids, k)
				return nil
			})
		}); err != nil {
			t.Fatal(err)
		}
		return ids
	}
	if got := records(); len(got) != 1 || got[0] != "vm/vm-1" {
		t.Fatalf("records %v, want only vm/vm-1", got)
	}
	var sig autostop.Signals
	for _, c := range a.components {
		if r, ok := c.(*autostopRunner); ok {
			sig = r.sig
		}
	}
	// A record whose VM the poller does not know (written before this
	// check existed, say) goes once it is old; vm-1's stays.
	sig.Known = nil
	if _, err := sig.Record(context.Background(), "vm-old"); err != nil {
		t.Fatal(err)
	}
	if got := records(); len(got) != 2 {
		t.Fatalf("records %v", got)
	}
	// The hourly prune runs on the relay's clock.
	clk.Advance(signalRecordTTL + time.Hour)
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		got := records()
		if len(got) == 1 && got[0] == "vm/vm-1" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("records after the prune %v, want only vm/vm-1", got)
		}
	}
}

// Activity signals count only for VMs the poller knows: junk ids, over
// NATS (the control user) or the admin API, are refused and stored nowhere.
func TestActivityOnlyForKnownVMs(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC))
	sim := cakeworksim.New(cakeworksim.Options{APIKey: "k", Clock: clk})
	sim.AddVM(cakework.VM{ID: "real-vm", ImageID: "img"})
	a, p, _ := autostopApp(t, clk, sim, 10*time.Minute, 2*time.Minute)
	if err := p.TickVMs(context.Background()); err != nil {
		t.Fatal(err)
	}
	nc := a.Core().Bus.Conn()
	for id, want := range map[string]string{"real-vm": `{"ok":true}`, "junk-1": "is not known to the poller"} {
		m, err := nc.Request(autostop.ActivitySubject, []byte(`{"id":"`+id+`"}`), 2*time.Second)
		if err != nil || !strings.Contains(string(m.Data), want) {
			t.Errorf("activity for %s: %v %s, want %s", id, err, m.Data, want)
		}
	}
	req, _ := http.NewRequest("POST", "http://"+a.HTTPAddr()+"/v1/vms/junk-2/activity", nil)
	req.Header.Set("Authorization", "Bearer admintoken")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("admin activity for an unknown VM: %d", resp.StatusCode)
	}
}
