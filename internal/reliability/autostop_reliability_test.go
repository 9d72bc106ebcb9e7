package reliability

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/cakework"
	"github.com/cakework-relay/cakework-relay/internal/event"
)

// TestAutostopOnTime runs the relay binary at second scale: every poller
// schedule @every 1s, sinks.autostop {idle_after: 3s, warn_before: 1s}, and
// a simulator VM that is quiet from the start. It must be stopped within
// idle_after plus two poll intervals of /readyz answering 200: one for the
// baseline sweep that starts its idle clock, one for the sweep and log poll
// the stop waits on after the warning. Neither the warning nor the stop may
// come before it is due, and the warning leads the stop by warn_before.
func TestAutostopOnTime(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the real binary")
	}
	const (
		poll       = time.Second
		idleAfter  = 3 * time.Second
		warnBefore = time.Second
		vm         = "quiet-vm"
	)
	world := NewWorld(1)
	defer world.Close()
	world.Sim.AddVM(cakework.VM{ID: vm})
	world.Sim.SetVMQuiet(vm, true)
	addrs, err := FreeAddrs(2)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	every := fmt.Sprintf("@every %s", poll)
	relay, err := NewRelay(relayBin, dir, RelayConfig{
		DataDir: filepath.Join(dir, "data"), HTTPAddr: addrs[0], EmbeddedAddr: addrs[1],
		CakeworkURL: world.API.URL, VMsEvery: every, BuildsEvery: every, LogsEvery: every,
		Autostop: fmt.Sprintf("{enabled: true, idle_after: %s, warn_before: %s}", idleAfter, warnBefore),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := relay.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = relay.P.Term(10 * time.Second) }()

	ready := until(t, 20*time.Second, func() bool {
		code, _, err := relay.Ready()
		return err == nil && code == 200
	})
	stopped := until(t, 30*time.Second, func() bool {
		v, ok := world.Sim.VM(vm)
		return ok && v.State != cakework.VMStarted
	})
	took := stopped.Sub(ready)
	t.Logf("stopped %v after /readyz answered 200 (bound: idle_after %v + 2 polls of %v)", took.Round(time.Millisecond), idleAfter, poll)
	if took > idleAfter+2*poll {
		t.Errorf("stopped %v after the relay was ready, want at most %v\nrelay output:\n%s", took, idleAfter+2*poll, relay.P.Logs)
	}

	// The events say when the relay warned and stopped, on its clock.
	var idle, autostopped []event.Event
	until(t, 10*time.Second, func() bool {
		msgs, err := ReadStream(context.Background(), relay.NATSURL(), "CAKEWORK")
		if err != nil {
			return false
		}
		idle, autostopped = nil, nil
		for _, m := range msgs {
			switch {
			case m.Event.Subject != vm:
			case m.Event.Action() == "idle":
				idle = append(idle, m.Event)
			case m.Event.Action() == "autostopped":
				autostopped = append(autostopped, m.Event)
			}
		}
		return len(autostopped) > 0
	})
	if len(idle) != 1 || len(autostopped) != 1 {
		t.Fatalf("%d vm.idle and %d vm.autostopped, want 1 each", len(idle), len(autostopped))
	}
	var d struct {
		IdleSince time.Time `json:"idleSince"`
	}
	if err := json.Unmarshal(idle[0].Data, &d); err != nil {
		t.Fatal(err)
	}
	warnLate := idle[0].Time.Sub(d.IdleSince.Add(idleAfter - warnBefore))
	stopLate := autostopped[0].Time.Sub(d.IdleSince.Add(idleAfter))
	t.Logf("idle clock started %v after ready; vm.idle %v after due, the stop %v after due",
		d.IdleSince.Sub(ready).Round(time.Millisecond), warnLate.Round(time.Millisecond), stopLate.Round(time.Millisecond))
	if warnLate < 0 || stopLate < 0 {
		t.Errorf("early: vm.idle %v, the stop %v after due", warnLate, stopLate)
	}
	if lead := autostopped[0].Time.Sub(idle[0].Time); lead < warnBefore {
		t.Errorf("the warning led the stop by %v, want at least warn_before %v", lead, warnBefore)
	}
}

// until polls cond every 10ms and returns when the first call that held
// began (the moment is known no later than that); it fails the test after
// timeout.
func until(t *testing.T, timeout time.Duration, cond func() bool) time.Time {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		at := time.Now()
		if cond() {
			return at
		}
		if at.After(deadline) {
			t.Fatalf("not so after %v", timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
