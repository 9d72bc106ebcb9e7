package poller

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/cakework"
	"github.com/cakework-relay/cakework-relay/internal/cakework/cakeworksim"
	"github.com/cakework-relay/cakework-relay/internal/state"
)

var errCrash = errors.New("simulated crash")

// Log lines are published exactly once and in order although the relay is
// killed again and again: between pages, before a page's commit, after a
// commit, with the outbox half published. The stream has bursts larger
// than a tick's page budget, identical lines in one millisecond, and lines
// arriving later in a millisecond the relay already emitted.
func TestLogsExactlyOnceAcrossCrashes(t *testing.T) {
	e := newEnv(t, testConfig(), cakeworksim.Options{}).open()
	e.mustTick(ScheduleVMs) // baseline: no VMs
	e.clk.Advance(time.Second)
	e.sim.AddVM(cakework.VM{ID: "vm-1"})
	e.mustTick(ScheduleVMs)

	rnd := rand.New(rand.NewPCG(7, 7))
	last := e.clk.Now().UnixMilli()
	n := 0
	appendLines := func(k int) {
		for range k {
			switch r := rnd.IntN(10); {
			case r < 4: // same millisecond as the newest line
			case r < 7:
				last += int64(rnd.IntN(3))
			default:
				last = min(last+int64(1+rnd.IntN(900)), e.clk.Now().UnixMilli())
			}
			msg := "tick" // identical lines
			if rnd.IntN(3) == 0 {
				msg = fmt.Sprintf("line %d", n)
			}
			e.sim.AppendVMLogs("vm-1", cakework.LogLine{Timestamp: last, Level: "info", Message: msg})
			n++
		}
	}

	for step := range 40 {
		e.clk.Advance(time.Duration(200+rnd.IntN(1300)) * time.Millisecond)
		k := rnd.IntN(6)
		if rnd.IntN(5) == 0 {
			k = 8 + rnd.IntN(10) // a burst larger than one tick's budget
		}
		appendLines(k)
		switch step % 5 {
		case 0: // crash between pages (the budget left the window pending)
			_ = e.tick(ScheduleLogs)
			e.crash()
		case 1: // crash just before the second page's commit
			var mu sync.Mutex
			calls := 0
			e.p.beforeLogCommit = func(string, string) error {
				mu.Lock()
				defer mu.Unlock()
				if calls++; calls == 2 {
					return errCrash
				}
				return nil
			}
			_ = e.tick(ScheduleLogs)
			e.crash()
		case 2: // crash before the first commit
			e.p.beforeLogCommit = func(string, string) error { return errCrash }
			_ = e.tick(ScheduleLogs)
			e.crash()
		case 3: // publish what is committed, then crash
			_ = e.tick(ScheduleLogs)
			e.drain()
			e.crash()
		default: // run on
			_ = e.tick(ScheduleLogs)
		}
	}
	for range 20 {
		e.clk.Advance(time.Second)
		e.mustTick(ScheduleLogs)
	}
	got := logLines(t, e.published("vm.log"), "vm-1")
	want := e.truth(cakework.LogVM, "vm-1")
	if len(want) != n || n < 100 {
		t.Fatalf("sim has %d lines, appended %d", len(want), n)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("published %d lines, want %d\nfirst difference at %d", len(got), len(want), firstDiff(got, want))
	}
}

func firstDiff(a, b []wire) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// A VM running at the baseline is tailed from the baseline on; a VM
// started later from its first line. Stopping drains the last lines and
// deletes the cursor. The in-process knowledge follows along.
func TestVMLogTailFromBaselineAndStop(t *testing.T) {
	e := newEnv(t, testConfig(), cakeworksim.Options{}).open()
	old := e.sim.AddVM(cakework.VM{ID: "old", CreatedAt: epoch.Add(-time.Hour)})
	e.sim.AppendVMLogs(old.ID,
		cakework.LogLine{Timestamp: epoch.Add(-time.Minute).UnixMilli(), Message: "before baseline"},
		cakework.LogLine{Timestamp: epoch.Add(-time.Millisecond).UnixMilli(), Message: "just before baseline"})
	e.mustTick(ScheduleVMs) // baseline at epoch

	e.clk.Advance(2 * time.Second)
	e.sim.AppendVMLogs(old.ID, cakework.LogLine{Message: "after baseline"})
	e.sim.AddVM(cakework.VM{ID: "new"})
	e.sim.AppendVMLogs("new", cakework.LogLine{Message: "boot"}, cakework.LogLine{Message: "ready"})
	e.mustTick(ScheduleVMs)
	e.mustTick(ScheduleLogs)

	e.clk.Advance(time.Second)
	e.sim.AppendVMLogs("new", cakework.LogLine{Message: "last words"})
	e.sim.SetVMState("new", cakework.VMStopped) // logs "[hypervisor] Machine stopped"
	e.mustTick(ScheduleVMs)
	e.mustTick(ScheduleLogs) // drains the final lines
	e.clk.Advance(time.Second)
	e.mustTick(ScheduleLogs) // nothing new: retired
	var have bool
	if err := e.store.View(func(tx *state.Tx) error {
		var c cursor
		var err error
		have, err = tx.GetCursor(state.KindVM, "new", &c)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if have {
		t.Fatal("the stopped VM's cursor was not deleted after its log was drained")
	}
	before := e.sim.CallCount(cakeworksim.RouteGetVMLogs)
	e.clk.Advance(time.Second)
	e.mustTick(ScheduleLogs)
	if got := e.sim.CallCount(cakeworksim.RouteGetVMLogs) - before; got != 1 {
		t.Fatalf("%d log calls for one running VM with no new data, want 1", got)
	}

	evs := e.published()
	msgs := func(id string) []string {
		var out []string
		for _, l := range logLines(t, evs, id) {
			out = append(out, l.Message)
		}
		return out
	}
	if got := msgs("old"); !slices.Equal(got, []string{"after baseline"}) {
		t.Fatalf("old VM lines %q", got)
	}
	if got, want := msgs("new"), []string{"boot", "ready", "last words", "[hypervisor] Machine stopped"}; !slices.Equal(got, want) {
		t.Fatalf("new VM lines %q, want %q", got, want)
	}
	k := e.p.VMKnowledge("old")
	if !k.Tailing || k.LastLogOK.IsZero() || !k.LastLogLine.Equal(epoch.Add(2*time.Second)) || k.LastLogOK.Before(k.LastLogFailed) || e.clk.Now().Sub(k.LastLogOK) > time.Minute {
		t.Fatalf("knowledge of old: %+v", k)
	}
}

// Faults on the log route emit nothing and move no cursor; the stream
// recovers afterwards with nothing lost or repeated.
func TestLogFaultsEmitNothing(t *testing.T) {
	e := openWithVM1(t)
	for i := range 10 {
		e.sim.AppendVMLogs("vm-1", cakework.LogLine{Message: fmt.Sprintf("line %d", i)})
	}
	e.drain()
	logs := []string{cakeworksim.RouteGetVMLogs}
	for i, f := range []cakeworksim.Faults{
		{Routes: logs, FailNext: 1},
		{Routes: logs, FailNext: 1, ErrorStatus: 502},
		{Routes: logs, TruncateNext: 1},
		{Routes: logs, GarbageNext: 1},
	} {
		e.clk.Advance(10 * time.Second) // past the stream's backoff
		e.sim.SetFaults(f)
		if err := e.tick(ScheduleLogs); err == nil {
			t.Fatalf("fault %d: tick succeeded", i)
		}
		if d := e.store.OutboxDepth(); d != 0 {
			t.Fatalf("fault %d: %d events", i, d)
		}
		if k := e.p.VMKnowledge("vm-1"); !k.LastLogFailed.Equal(e.clk.Now()) || k.LastLogOK.After(k.LastLogFailed) {
			t.Fatalf("fault %d: knowledge %+v", i, k)
		}
	}
	// Backoff: right after a failure the stream is not called.
	before := e.sim.CallCount(cakeworksim.RouteGetVMLogs)
	e.sim.ClearFaults()
	e.mustTick(ScheduleLogs)
	if e.sim.CallCount(cakeworksim.RouteGetVMLogs) != before {
		t.Fatal("a failing stream was called again inside its backoff")
	}
	e.catchUpVMLog("vm-1", 4)
}

// A stored pagination token the server refuses (expired, say) restarts the
// window from the cursor: nothing repeated, nothing lost.
func TestRefusedTokenRestartsWindow(t *testing.T) {
	e := openWithVM1(t)
	for i := range 9 {
		e.sim.AppendVMLogs("vm-1", cakework.LogLine{Message: fmt.Sprintf("line %d", i%2)})
	}
	e.mustTick(ScheduleLogs) // 2 pages of 3: the window stays pending
	if err := e.store.Update(t.Context(), func(tx *state.Tx) error {
		var c cursor
		if _, err := tx.GetCursor(state.KindVM, "vm-1", &c); err != nil || c.Pending == nil {
			return fmt.Errorf("no pending window: %v", err)
		}
		c.Pending.Pagination = "expired"
		return tx.PutCursor(state.KindVM, "vm-1", c)
	}); err != nil {
		t.Fatal(err)
	}
	if err := e.tick(ScheduleLogs); err == nil {
		t.Fatal("a refused token went unnoticed")
	}
	e.catchUpVMLog("vm-1", 3)
}

// A VM whose log polls fail is "failing" until a pass reads its log to the
// end again: through its backoff (no call, so no new failure) and through
// a pass that succeeds but leaves pages unread. The first draining pass is
// when it recovered. The sweep has the same pair.
func TestLogFailingUntilReadToTheEnd(t *testing.T) {
	e := openWithVM1(t) // 2 pages of 3 lines a pass
	e.mustTick(ScheduleLogs)
	if k := e.p.VMKnowledge("vm-1"); k.LogFailing || k.LastLogOK.IsZero() || !k.LogRecovered.IsZero() {
		t.Fatalf("healthy stream: %+v", k)
	}

	e.clk.Advance(time.Second)
	e.sim.SetFaults(cakeworksim.Faults{Routes: []string{cakeworksim.RouteGetVMLogs}, FailNext: 1})
	if err := e.tick(ScheduleLogs); err == nil {
		t.Fatal("the failing pass succeeded")
	}
	failedAt := e.clk.Now()
	calls := e.sim.CallCount(cakeworksim.RouteGetVMLogs)
	e.clk.Advance(100 * time.Millisecond) // inside the backoff: no call
	e.mustTick(ScheduleLogs)
	if e.sim.CallCount(cakeworksim.RouteGetVMLogs) != calls {
		t.Fatal("called inside the backoff")
	}
	if k := e.p.VMKnowledge("vm-1"); !k.LogFailing || !k.LastLogFailed.Equal(failedAt) {
		t.Fatalf("backing off: %+v", k)
	}

	for i := range 10 {
		e.sim.AppendVMLogs("vm-1", cakework.LogLine{Message: fmt.Sprintf("line %d", i)})
	}
	e.clk.Advance(10 * time.Second)
	e.mustTick(ScheduleLogs) // 6 of 10 lines: not to the end
	if k := e.p.VMKnowledge("vm-1"); !k.LogFailing || !k.LogRecovered.IsZero() {
		t.Fatalf("a pass that left pages unread ended the failure: %+v", k)
	}
	e.clk.Advance(time.Second)
	e.mustTick(ScheduleLogs)
	if k := e.p.VMKnowledge("vm-1"); k.LogFailing || !k.LogRecovered.Equal(e.clk.Now()) || !k.LastLogOK.Equal(e.clk.Now()) {
		t.Fatalf("drained: %+v", k)
	}

	e.sim.SetFaults(cakeworksim.Faults{Routes: []string{cakeworksim.RouteListVMs}, FailNext: 1})
	e.clk.Advance(time.Second)
	if err := e.tick(ScheduleVMs); err == nil {
		t.Fatal("the failing sweep succeeded")
	}
	if k := e.p.VMKnowledge("vm-1"); !k.SweepFailing || !k.SweepRecovered.IsZero() {
		t.Fatalf("failed sweep: %+v", k)
	}
	e.clk.Advance(time.Second)
	e.mustTick(ScheduleVMs)
	if k := e.p.VMKnowledge("vm-1"); k.SweepFailing || !k.SweepRecovered.Equal(e.clk.Now()) {
		t.Fatalf("sweep recovered: %+v", k)
	}
}

// OnVMKnowledge's callback runs after each VM sweep and logs pass, failed
// or not, and not after a builds tick.
func TestOnVMKnowledgeAfterSweepsAndLogPasses(t *testing.T) {
	e := newEnv(t, testConfig(), cakeworksim.Options{}).open()
	var calls atomic.Int32
	e.p.OnVMKnowledge(func() { calls.Add(1) })
	e.mustTick(ScheduleVMs)
	e.mustTick(ScheduleLogs)
	e.mustTick(ScheduleBuilds)
	if n := calls.Load(); n != 2 {
		t.Fatalf("%d calls after a sweep, a logs pass and a builds tick, want 2", n)
	}
	e.sim.SetFaults(cakeworksim.Faults{Routes: []string{cakeworksim.RouteListVMs}, FailNext: 1})
	if err := e.tick(ScheduleVMs); err == nil {
		t.Fatal("the failing sweep succeeded")
	}
	if n := calls.Load(); n != 3 {
		t.Fatalf("%d calls, want 3 after a failed sweep", n)
	}
}
