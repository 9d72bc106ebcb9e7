package poller

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/cakework"
	"github.com/cakework-relay/cakework-relay/internal/cakework/cakeworksim"
	"github.com/cakework-relay/cakework-relay/internal/event"
)

func addVMs(e *env, ids ...string) {
	for i, id := range ids {
		e.sim.AddVM(cakework.VM{ID: id, CreatedAt: epoch.Add(time.Duration(i) * time.Second)})
	}
}

// A scripted sequence across list page boundaries gives exactly the
// expected events: a silent baseline, then one event per change.
func TestVMSweepScriptedAcrossPages(t *testing.T) {
	cfg := testConfig()
	cfg.Logs.VMs = false
	e := newEnv(t, cfg, cakeworksim.Options{ListPageSize: 2}).open()
	addVMs(e, "vm-a", "vm-b", "vm-c", "vm-d", "vm-e", "vm-f", "vm-g")
	e.sim.AddVM(cakework.VM{ID: "bad.id", CreatedAt: epoch.Add(time.Minute)})
	e.sim.SetVMState("vm-f", cakework.VMCreated)

	e.mustTick(ScheduleVMs)
	if got := e.sim.CallCount(cakeworksim.RouteListVMs); got != 4 {
		t.Fatalf("baseline sweep made %d list calls, want 4 pages", got)
	}
	if d := e.store.OutboxDepth(); d != 0 {
		t.Fatalf("baseline emitted %d events", d)
	}

	e.clk.Advance(10 * time.Second)
	e.sim.SetVMState("vm-a", cakework.VMStopped)
	e.sim.SetVMState("vm-b", "suspended")
	e.sim.RemoveVM("vm-c")
	e.sim.SetVMState("vm-d", cakework.VMDestroyed)
	e.sim.SetVMState("vm-f", cakework.VMStarted)
	e.sim.AddVM(cakework.VM{ID: "vm-h", CreatedAt: epoch.Add(20 * time.Second)})
	e.sim.ResetCalls()
	e.mustTick(ScheduleVMs)
	if got := e.sim.CallCount(cakeworksim.RouteGetVM); got != 1 {
		t.Fatalf("%d getVM calls, want 1 (only the vanished vm-c)", got)
	}

	e.clk.Advance(10 * time.Second)
	e.sim.ResetCalls()
	e.mustTick(ScheduleVMs) // nothing changed: nothing emitted, no getVM
	if got := e.sim.CallCount(cakeworksim.RouteGetVM); got != 0 {
		t.Fatalf("a confirmed-destroyed VM was checked again (%d getVM calls)", got)
	}

	evs := e.published()
	want := []string{
		"vm.destroyed vm-c", "vm.destroyed vm-d", "vm.started vm-f", "vm.started vm-h",
		"vm.stopped vm-a", "vm.suspended vm-b",
	}
	slices.Sort(want)
	if got := summary(evs); !slices.Equal(got, want) {
		t.Fatalf("events:\n got %v\nwant %v", got, want)
	}
	prev := map[string]string{"vm-a": "started", "vm-b": "started", "vm-c": "started", "vm-d": "started", "vm-f": "created", "vm-h": ""}
	for _, ev := range evs {
		d := data(t, ev)
		if d["observedBy"] != "poller" || d["id"] != ev.Subject || d["state"] != ev.Action() {
			t.Errorf("%s: data %v", ev.Type, d)
		}
		if p, _ := d["previousState"].(string); p != prev[ev.Subject] {
			t.Errorf("%s %s: previousState %q, want %q", ev.Type, ev.Subject, p, prev[ev.Subject])
		}
		if ev.Subject == "vm-c" {
			continue // confirmed by a 404: no upstream updatedAt
		}
		v, _ := e.sim.VM(ev.Subject)
		if ev.ID != event.VMStateID(v.ID, v.State, v.UpdatedAt) || !ev.Time.Equal(v.UpdatedAt) {
			t.Errorf("%s %s: id/time %s %s not derived from updatedAt %s", ev.Type, ev.Subject, ev.ID, ev.Time, v.UpdatedAt)
		}
	}
	k := e.p.VMKnowledge("vm-a")
	if !k.Known || k.State != "stopped" || k.LastSweepOK.IsZero() {
		t.Fatalf("knowledge %+v", k)
	}
}

func TestVMEmitBaseline(t *testing.T) {
	cfg := testConfig()
	cfg.VMs.EmitBaseline = true
	e := newEnv(t, cfg, cakeworksim.Options{ListPageSize: 2}).open()
	addVMs(e, "vm-a", "vm-b", "vm-c")
	e.mustTick(ScheduleVMs)
	e.mustTick(ScheduleVMs)
	e.wantVMEvents("vm.started vm-a", "vm.started vm-b", "vm.started vm-c")
}

// Faults during a sweep change nothing and emit nothing; the next good
// sweep catches up with exactly the changes.
func TestVMSweepFaultsEmitNothing(t *testing.T) {
	cfg := testConfig()
	cfg.Logs.VMs = false
	e := newEnv(t, cfg, cakeworksim.Options{ListPageSize: 2}).open()
	addVMs(e, "vm-a", "vm-b", "vm-c", "vm-d", "vm-e")
	e.mustTick(ScheduleVMs)
	e.sim.SetVMState("vm-a", cakework.VMStopped)
	e.sim.SetVMState("vm-e", cakework.VMStopped)
	e.sim.RemoveVM("vm-c")

	list := []string{cakeworksim.RouteListVMs}
	for i, f := range []cakeworksim.Faults{
		{Routes: list, After: 1, FailNext: 1},                   // 500 on page 2
		{Routes: list, After: 1, FailNext: 1, ErrorStatus: 503}, // 503 on the last page
		{Routes: list, After: 1, TruncateNext: 1},               // truncated page 2
		{Routes: list, After: 1, GarbageNext: 1},                // HTML instead of JSON
		{Routes: list, FailNext: 1, ErrorStatus: 504},           // first page
		{Routes: []string{cakeworksim.RouteGetVM}, FailNext: 1}, // confirmation fails
	} {
		e.clk.Advance(10 * time.Second) // past any backoff
		e.sim.SetFaults(f)
		err := e.tick(ScheduleVMs)
		if err == nil {
			t.Fatalf("fault %d: tick succeeded", i)
		}
		if i < 5 {
			if d := e.store.OutboxDepth(); d != 0 {
				t.Fatalf("fault %d (%v): %d events emitted", i, err, d)
			}
			continue
		}
		// The list was complete: the visible changes are recorded, but the
		// vanished VM is not called destroyed without confirmation.
		for _, ev := range e.published("vm.") {
			if ev.Subject == "vm-c" {
				t.Fatalf("fault %d: vm-c announced as %s without confirmation", i, ev.Type)
			}
		}
	}
	e.sim.ClearFaults()
	e.clk.Advance(10 * time.Second)
	e.mustTick(ScheduleVMs)
	e.mustTick(ScheduleVMs)
	e.wantVMEvents("vm.destroyed vm-c", "vm.stopped vm-a", "vm.stopped vm-e")
}

// A 429 pauses every schedule: no call goes out inside Retry-After.
func TestRateLimitPauseHonoured(t *testing.T) {
	e := openSweptVM(t, nil)
	if _, err := e.p.Watch(context.Background(), "build", "b1", SourceAdmin); err != nil {
		t.Fatal(err)
	}
	e.sim.CreateBuild(cakeworksim.BuildSpec{ID: "b1", Manual: true})
	e.sim.SetFaults(cakeworksim.Faults{RateLimitNext: 1, RetryAfter: 5 * time.Second})
	e.sim.ResetCalls()
	if err := e.tick(ScheduleVMs); !isStatus(err, 429) {
		t.Fatalf("want a 429, got %v", err)
	}
	for _, step := range []time.Duration{0, time.Second, 3 * time.Second} {
		e.clk.Advance(step)
		for _, s := range []string{ScheduleVMs, ScheduleBuilds, ScheduleLogs} {
			if err := e.tick(s); err != nil {
				t.Fatalf("%s during pause: %v", s, err)
			}
		}
		if n := e.sim.TotalCalls(); n != 1 {
			t.Fatalf("%d calls inside the Retry-After window (at +%s)", n, step)
		}
	}
	e.clk.Advance(time.Second + time.Millisecond) // 5s after the 429
	e.mustTick(ScheduleVMs)
	e.mustTick(ScheduleBuilds)
	if n := e.sim.TotalCalls(); n != 3 {
		t.Fatalf("%d calls after the pause, want 3", n)
	}
}

func isStatus(err error, code int) bool {
	var ae *cakework.APIError
	return errors.As(err, &ae) && ae.Status == code
}

// A wrong key shows on readiness and fails ticks; it is not retried as
// upstream trouble.
func TestUnauthorizedShowsOnReady(t *testing.T) {
	e := newEnv(t, testConfig(), cakeworksim.Options{})
	e.noBus = true
	e.key = "wrong"
	e.open()
	if err := e.p.Ready(); err != nil {
		t.Fatal(err)
	}
	if err := e.tick(ScheduleVMs); err == nil {
		t.Fatal("tick succeeded with a wrong key")
	}
	if err := e.p.Ready(); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("Ready() = %v", err)
	}
	if st := e.p.Status(); st.Unauthorized == "" || st.Schedules["vms"].Errors != 1 {
		t.Fatalf("status %+v", st)
	}
}
