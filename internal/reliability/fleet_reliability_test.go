package reliability

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/cakework"
	"github.com/cakework-relay/cakework-relay/internal/cakework/cakeworksim"
)

// TestFleetLeader runs 3 relay processes on a 3-node NATS cluster with
// busy VMs logging and idle ones waiting to be stopped. One leader polls:
// listVMs at the rate of one poller. The leader is killed (SIGKILL): the
// next takes over within 2x lease_ttl plus a tick. The new leader is frozen
// (SIGSTOP) past its lease and thawed: it publishes nothing stale. The
// killed member comes back as a standby. In the end every log line is on
// the stream exactly once and in order, and each idle VM got one vm.idle,
// one stopVM call and one vm.autostopped.
func TestFleetLeader(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the real binaries")
	}
	const (
		leaseTTL = 2 * time.Second
		tick     = time.Second
		idleVMs  = 3
	)
	ctx := context.Background()
	world := NewWorld(7)
	defer world.Close()
	for i := range idleVMs {
		v := world.Sim.AddVM(cakework.VM{ID: fmt.Sprintf("idlevm-%d", i)})
		world.Sim.SetVMQuiet(v.ID, true)
	}
	every := fmt.Sprintf("@every %s", tick)
	f, err := StartFleet(relayBin, natsBin, t.TempDir(), 3, func(int) RelayConfig {
		return RelayConfig{
			CakeworkURL: world.API.URL, VMsEvery: every, BuildsEvery: every, LogsEvery: every,
			LeaseTTL: leaseTTL, LogLevel: "info",
			Autostop: "{enabled: true, idle_after: 24s, warn_before: 8s, max_stops_per_minute: 10}",
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		f.Stop()
		if t.Failed() {
			for i, r := range f.Relays {
				t.Logf("member m%d output:\n%s", i+1, r.P.Logs)
			}
		}
	}()
	for _, r := range f.Relays {
		until(t, 30*time.Second, func() bool { code, _, err := r.Ready(); return err == nil && code == 200 })
	}
	leader, err := f.WaitLeader(ctx, 5*leaseTTL, -1)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Relays[leader].WaitBaseline(ctx, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	// Watches work at any member: a standby forwards them to the leader.
	standby := (leader + 1) % 3
	other := (leader + 2) % 3
	world.Sim.CreateBuild(cakeworksim.BuildSpec{ID: "fleet-build", Manual: true})
	if code, body, err := f.Relays[standby].Admin(ctx, "PUT", "/v1/watches/builds/fleet-build"); err != nil || code != 201 {
		t.Fatalf("PUT /v1/watches at a standby: %d %s %v", code, body, err)
	}
	if code, body, err := f.Relays[other].Admin(ctx, "GET", "/v1/watches"); err != nil || code != 200 || !strings.Contains(body, `"fleet-build"`) {
		t.Errorf("GET /v1/watches at another standby: %d %s %v", code, body, err)
	}
	if code, _, _ := f.Relays[standby].Ready(); code != 200 {
		t.Errorf("/readyz at a healthy standby: %d, want 200", code)
	}
	world.AddVMs(4) // logging VMs, tailed from their first line
	appendCtx, stopAppending := context.WithCancel(ctx)
	appended := background(func() { Loop(appendCtx, 300*time.Millisecond, world.AppendLogs) })

	// One poller's rate: a sweep per tick, whoever leads.
	world.Sim.ResetCalls()
	const window = 6 * time.Second
	time.Sleep(window)
	if n, max := world.Sim.CallCount(cakeworksim.RouteListVMs), int(window/tick)+2; n > max || n < int(window/tick)-2 {
		t.Errorf("listVMs called %d times in %s by 3 members; one poller calls it about %d times", n, window, int(window/tick))
	}

	// SIGKILL the leader: polling resumes within 2x lease_ttl plus a tick.
	before := world.Sim.CallCount(cakeworksim.RouteListVMs)
	killedAt := time.Now()
	f.Relays[leader].P.Kill()
	resumed := until(t, 4*leaseTTL+tick, func() bool { return world.Sim.CallCount(cakeworksim.RouteListVMs) > before+1 })
	t.Logf("listVMs resumed %s after the leader was killed (bound %s)", resumed.Sub(killedAt).Round(time.Millisecond), 2*leaseTTL+tick)
	if d := resumed.Sub(killedAt); d > 2*leaseTTL+2*tick {
		t.Errorf("polling resumed %s after the kill, want within 2x lease_ttl + a tick (%s)", d, 2*leaseTTL+tick)
	}
	next, err := f.WaitLeader(ctx, 3*leaseTTL, leader)
	if err != nil {
		t.Fatal(err)
	}

	// SIGSTOP the new leader past its lease, then SIGCONT.
	f.Relays[next].P.Stop()
	third, err := f.WaitLeader(ctx, 4*leaseTTL, next)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(leaseTTL)
	f.Relays[next].P.Cont()
	until(t, 3*leaseTTL, func() bool {
		st, err := f.Relays[next].Cluster(ctx)
		return err == nil && st.Role == "standby"
	})
	if ls := f.Leaders(ctx); len(ls) != 1 || ls[0] != third {
		t.Errorf("after the thaw, leaders are %v; want only m%d", ls, third+1)
	}

	// The killed member comes back as a standby.
	if err := f.Relays[leader].Start(); err != nil {
		t.Fatal(err)
	}
	until(t, 30*time.Second, func() bool {
		st, err := f.Relays[leader].Cluster(ctx)
		return err == nil && st.Role == "standby" && st.Leader == fmt.Sprintf("m%d", third+1)
	})

	// Let the idle VMs be warned and stopped, then stop the logs and let
	// the leader drain them.
	until(t, 60*time.Second, func() bool {
		stopped := 0
		for i := range idleVMs {
			if v, ok := world.Sim.VM(fmt.Sprintf("idlevm-%d", i)); ok && v.State != cakework.VMStarted {
				stopped++
			}
		}
		return stopped == idleVMs
	})
	stopAppending()
	<-appended
	// Every VM auto-stopped (the idle ones, and any other that went quiet
	// meanwhile) was warned once and stopped once, by one call. The last
	// stops were just made: their events may still be on their way.
	var want []string
	for i := range idleVMs {
		want = append(want, fmt.Sprintf("idlevm-%d", i))
	}
	msgs, probs := settleStream(ctx, f.NATS.URL(), world, time.Now().Add(30*time.Second), func(msgs []StreamMsg) []string {
		return CheckAutostops(msgs, world.Sim.StopsDone(), want)
	})
	for _, p := range probs {
		t.Error(p)
	}
	if calls, done := world.Sim.CallCount(cakeworksim.RouteStopVM), world.Sim.StopsDone(); calls != done {
		t.Logf("stopVM: %d calls, %d stopped a VM (the others were repeats after a term ended mid-call, answered 409)", calls, done)
	}
	t.Logf("%d stream messages, %d log lines written", len(msgs), world.LineCount())
}
