package reliability

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/cakework"
	"github.com/cakework-relay/cakework-relay/internal/cakework/cakeworksim"
)

// FleetChaosOptions configure FleetChaos.
type FleetChaosOptions struct {
	RelayBin, NATSBin, Dir string
	Kills                  int           // leader SIGKILLs
	Freezes                int           // leader SIGSTOPs past the lease
	LeaseTTL               time.Duration // cluster.lease_ttl
	Tick                   time.Duration // every poller schedule
	LogVMs, IdleVMs        int
	IdleAfter              time.Duration // sinks.autostop.idle_after
	Logf                   func(string, ...any)
}

// FleetChaosResult is what FleetChaos measured.
type FleetChaosResult struct {
	// Failover is, per leader kill or freeze, the time from the signal
	// until listVMs was called again (by the next leader).
	KillFailovers, FreezeFailovers []time.Duration
	NATSNodeKilled                 bool
	Messages, Lines, Autostopped   int
	Problems                       []string
}

// FleetChaos runs 3 relays on a 3-node NATS cluster with VMs logging and
// idle VMs waiting to be stopped, kills the leader Kills times (restarting
// it each time), freezes it Freezes times past its lease, and kills and
// restarts one NATS node half way. Then it checks the stream: every log
// line once and in order, one warning and one stop per idle period, one
// stopVM call per stop.
func FleetChaos(ctx context.Context, o FleetChaosOptions) (*FleetChaosResult, error) {
	logf := o.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	world := NewWorld(11)
	defer world.Close()
	var idle []string
	for i := range o.IdleVMs {
		v := world.Sim.AddVM(cakework.VM{ID: fmt.Sprintf("idlevm-%03d", i)})
		world.Sim.SetVMQuiet(v.ID, true)
		idle = append(idle, v.ID)
	}
	every := fmt.Sprintf("@every %s", o.Tick)
	f, err := StartFleet(o.RelayBin, o.NATSBin, o.Dir, 3, func(int) RelayConfig {
		return RelayConfig{
			CakeworkURL: world.API.URL, VMsEvery: every, BuildsEvery: every, LogsEvery: every,
			LeaseTTL: o.LeaseTTL, LogLevel: "warn",
			Autostop: fmt.Sprintf("{enabled: true, idle_after: %s, warn_before: %s, max_stops_per_minute: 1000}", o.IdleAfter, o.IdleAfter/3),
		}
	})
	if err != nil {
		return nil, err
	}
	defer f.Stop()
	for _, r := range f.Relays {
		if err := WaitHTTP(r.URL("/readyz"), 200, 60*time.Second, r.P.Done()); err != nil {
			return nil, err
		}
	}
	leader, err := f.WaitLeader(ctx, 10*o.LeaseTTL, -1)
	if err != nil {
		return nil, err
	}
	if err := f.Relays[leader].WaitBaseline(ctx, 30*time.Second); err != nil {
		return nil, err
	}
	// AddVMs also adds as many quiet VMs: idle too, stopped once each.
	world.AddVMs(o.LogVMs)
	actx, stopAppending := context.WithCancel(ctx)
	appended := background(func() { Loop(actx, 300*time.Millisecond, world.AppendLogs) })
	defer func() { stopAppending(); <-appended }()

	res := &FleetChaosResult{}
	// resumed waits until listVMs is called again after n calls, and
	// returns when.
	resumed := func(n int) (time.Time, error) {
		deadline := time.Now().Add(10 * o.LeaseTTL)
		for time.Now().Before(deadline) {
			at := time.Now()
			if world.Sim.CallCount(cakeworksim.RouteListVMs) > n {
				return at, nil
			}
			if err := CtxSleep(ctx, 10*time.Millisecond); err != nil {
				return time.Time{}, err
			}
		}
		return time.Time{}, fmt.Errorf("listVMs not called for %s", 10*o.LeaseTTL)
	}
	// The freezes are spread among the kills.
	rounds := o.Kills + o.Freezes
	plan := make([]bool, rounds)
	for i := range o.Freezes {
		plan[(2*i+1)*rounds/(2*o.Freezes)] = true
	}
	for round := range rounds {
		if round == rounds/2 {
			// One NATS node (not the one every relay lists first) dies and
			// comes back.
			node := f.NATS.Nodes[1]
			node.Kill()
			res.NATSNodeKilled = true
			logf("NATS node n2 killed")
			_ = CtxSleep(ctx, 3*o.LeaseTTL)
			if err := node.Start(); err != nil {
				return nil, err
			}
			logf("NATS node n2 restarted")
		}
		leader, err := f.WaitLeader(ctx, 10*o.LeaseTTL, -1)
		if err != nil {
			return nil, err
		}
		r := f.Relays[leader]
		// Start right after a sweep, so the next one is a tick away.
		n := world.Sim.CallCount(cakeworksim.RouteListVMs)
		if _, err := resumed(n); err != nil {
			return nil, err
		}
		n = world.Sim.CallCount(cakeworksim.RouteListVMs)
		at := time.Now()
		freeze := plan[round]
		if freeze {
			r.P.Stop()
		} else {
			r.P.Kill()
		}
		back, err := resumed(n + 1) // the sweep in flight may still land
		if err != nil {
			return nil, fmt.Errorf("round %d: %w", round+1, err)
		}
		d := back.Sub(at)
		if freeze {
			res.FreezeFailovers = append(res.FreezeFailovers, d)
			if _, err := f.WaitLeader(ctx, 10*o.LeaseTTL, leader); err != nil {
				return nil, err
			}
			_ = CtxSleep(ctx, o.LeaseTTL)
			r.P.Cont()
		} else {
			res.KillFailovers = append(res.KillFailovers, d)
			if err := r.Start(); err != nil {
				return nil, err
			}
		}
		// It comes back as a standby.
		deadline := time.Now().Add(60 * time.Second)
		for {
			st, err := r.Cluster(ctx)
			if err == nil && st.Role == "standby" && st.Leader != "" {
				break
			}
			if time.Now().After(deadline) {
				return nil, fmt.Errorf("round %d: member m%d did not come back as a standby", round+1, leader+1)
			}
			_ = CtxSleep(ctx, 50*time.Millisecond)
		}
		kind := "kill"
		if freeze {
			kind = "freeze"
		}
		logf("round %d: %s of leader m%d, polling resumed after %s", round+1, kind, leader+1, d.Round(time.Millisecond))
	}
	// The idle VMs are stopped in time; then the logs stop and drain.
	deadline := time.Now().Add(2*o.IdleAfter + time.Minute)
	for {
		stopped := 0
		for _, id := range idle {
			if v, ok := world.Sim.VM(id); ok && v.State != cakework.VMStarted {
				stopped++
			}
		}
		if stopped == len(idle) {
			break
		}
		if time.Now().After(deadline) {
			res.Problems = append(res.Problems, fmt.Sprintf("%d of %d idle VMs stopped", stopped, len(idle)))
			break
		}
		_ = CtxSleep(ctx, 200*time.Millisecond)
	}
	stopAppending()
	<-appended
	// The auto-stop events of VMs stopped a moment ago may still be on
	// their way: settle on them too.
	msgs, probs := settleStream(ctx, f.NATS.URL(), world, time.Now().Add(60*time.Second), func(msgs []StreamMsg) []string {
		return CheckAutostops(msgs, world.Sim.StopsDone(), idle)
	})
	res.Problems = append(res.Problems, probs...)
	res.Messages, res.Lines = len(msgs), world.LineCount()
	for _, m := range msgs {
		if m.Event.ShortType() == "vm.autostopped" {
			res.Autostopped++
		}
	}
	return res, nil
}

func (r *FleetChaosResult) String() string {
	var b strings.Builder
	q := func(ds []time.Duration) string {
		if len(ds) == 0 {
			return "none"
		}
		s := slices.Clone(ds)
		slices.Sort(s)
		return fmt.Sprintf("n=%d p50 %s max %s", len(s), s[len(s)/2].Round(time.Millisecond), s[len(s)-1].Round(time.Millisecond))
	}
	fmt.Fprintf(&b, "leader killed: polling resumed after %s\n", q(r.KillFailovers))
	fmt.Fprintf(&b, "leader frozen: polling resumed after %s\n", q(r.FreezeFailovers))
	fmt.Fprintf(&b, "NATS node killed and restarted: %v\n", r.NATSNodeKilled)
	fmt.Fprintf(&b, "stream: %d events, %d log lines written, %d VMs auto-stopped; %d problems\n", r.Messages, r.Lines, r.Autostopped, len(r.Problems))
	return b.String()
}
