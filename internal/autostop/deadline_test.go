package autostop

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/cakework"
	"github.com/cakework-relay/cakework-relay/internal/cakework/cakeworksim"
)

// loopEnv runs the auto-stopper's own loop (Start) on the fake clock,
// against a fake poller that sweeps and reads logs every interval and
// kicks the loop after each poll, as the app wires it. The test moves the
// clock from one moment something happens to the next (a poll, or the
// moment the loop said it evaluates next) and, after each, waits until the
// loop has evaluated and waits again. Nothing sleeps.
type loopEnv struct {
	*env
	interval time.Duration // the poller's
	nextPoll time.Time
	url      string

	waits   chan time.Time
	stopped chan struct{}
	wake    time.Time // when the loop evaluates next, unless kicked

	mu    sync.Mutex
	stops []time.Time // when stopVM was called, on the fake clock
}

func newLoopEnv(t *testing.T, cfg Config, interval time.Duration) *loopEnv {
	t.Helper()
	l := &loopEnv{env: newEnv(t, cfg), interval: interval}
	srv := httptest.NewServer(l.sim.Handler())
	t.Cleanup(srv.Close)
	l.url = srv.URL
	l.src.manual = true
	l.nextPoll = l.clk.Now()
	return l
}

// start builds an auto-stopper on the current store (a restarted relay's
// when the store was reopened), runs its loop and waits for it to settle.
func (l *loopEnv) start() {
	l.t.Helper()
	cl, err := cakework.New(cakework.Options{BaseURL: l.url, APIKey: "k", Clock: l.clk})
	if err != nil {
		l.t.Fatal(err)
	}
	stopper := hookStopper{Stopper: cl, onStop: func(string) {
		l.mu.Lock()
		l.stops = append(l.stops, l.clk.Now())
		l.mu.Unlock()
	}}
	l.as, err = New(Options{Config: l.cfg, LogsWatched: true, Source: l.src, Stopper: stopper, Store: StateStore(l.store),
		SubjectPrefix: "cakework", Clock: l.clk})
	if err != nil {
		l.t.Fatal(err)
	}
	waits, stopped := make(chan time.Time), make(chan struct{})
	l.waits, l.stopped = waits, stopped
	l.as.waiting = func(at time.Time) {
		select {
		case waits <- at:
		case <-stopped:
		}
	}
	if err := l.as.Start(context.Background()); err != nil {
		l.t.Fatal(err)
	}
	as := l.as
	l.t.Cleanup(func() { l.halt(as, stopped) })
	l.settle()
}

func (l *loopEnv) halt(as *AutoStop, stopped chan struct{}) {
	select {
	case <-stopped:
		return
	default:
	}
	close(stopped)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := as.Stop(ctx); err != nil {
		l.t.Errorf("stopping the loop: %v", err)
	}
}

// restart is a crash and restart of the relay: the loop ends, the store
// is reopened, the poller forgets what it knew in memory, and a new
// auto-stopper starts on the same data.
func (l *loopEnv) restart() {
	l.t.Helper()
	l.halt(l.as, l.stopped)
	l.env.restart(l.url)
	l.src.forget()
	l.start()
}

// settle waits until the loop has evaluated and waits for a later moment
// with no kick pending.
func (l *loopEnv) settle() {
	l.t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case at := <-l.waits:
			if at.After(l.clk.Now()) && len(l.as.kick) == 0 {
				l.wake = at
				return
			}
		case <-timeout:
			l.t.Fatal("the auto-stop loop did not come back to wait")
		}
	}
}

// runUntil moves the clock to end, one event at a time: polls (each
// followed by a kick) every interval, and the loop's own wake-ups. before,
// when set, runs before each poll.
func (l *loopEnv) runUntil(end time.Time, before func()) {
	l.t.Helper()
	for {
		at := l.nextPoll
		if l.wake.Before(at) {
			at = l.wake
		}
		if at.After(end) {
			l.clk.Set(end)
			if !l.wake.After(end) {
				l.settle()
			}
			return
		}
		l.clk.Set(at)
		if !l.wake.After(at) {
			l.settle()
		}
		if !l.nextPoll.After(at) {
			if before != nil {
				before()
			}
			l.src.poll()
			l.as.Kick()
			l.settle()
			l.nextPoll = l.nextPoll.Add(l.interval)
		}
	}
}

func (l *loopEnv) stopTimes() []time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]time.Time(nil), l.stops...)
}

// eventTimes lists the times of the vm.<action> events about id.
func (e *env) eventTimes(action, id string) []time.Time {
	e.t.Helper()
	var out []time.Time
	for _, ev := range e.outboxEvents(action) {
		if ev.Subject == id {
			out = append(out, ev.Time)
		}
	}
	return out
}

// within fails unless exactly one time was recorded, in [due, due+slack].
func within(t *testing.T, what string, got []time.Time, due time.Time, slack time.Duration) {
	t.Helper()
	if len(got) != 1 {
		t.Fatalf("%s: %d times (%v), want 1 within %v of %v", what, len(got), got, slack, due)
	}
	if late := got[0].Sub(due); late < 0 || late > slack {
		t.Fatalf("%s at %v, due at %v: %v late, want 0 to %v", what, got[0], due, late, slack)
	}
}

// The warning and the stop land within one poll interval of when they are
// due, whatever the settings' scale and however they compare with
// sinks.autostop.check (15s here), across relay restarts before the
// warning and between the warning and the stop.
func TestWarningAndStopWithinOnePollOfDue(t *testing.T) {
	for _, c := range []struct {
		name                  string
		idleAfter, warnBefore time.Duration
		poll                  time.Duration
	}{
		{"seconds", 6 * time.Second, 3 * time.Second, time.Second},
		{"hours", 2 * time.Hour, 10 * time.Minute, 30 * time.Second},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := defaults()
			cfg.IdleAfter, cfg.WarnBefore = c.idleAfter, c.warnBefore
			l := newLoopEnv(t, cfg, c.poll)
			l.startVM("vm1", "img")
			l.start()
			warnAt, stopAt := t0.Add(c.idleAfter-c.warnBefore), t0.Add(c.idleAfter)

			l.runUntil(warnAt.Add(-c.poll/2), nil)
			if n := len(l.events("idle")); n != 0 {
				t.Fatalf("warned %v early", warnAt.Sub(l.clk.Now()))
			}
			l.restart()
			l.runUntil(warnAt.Add(c.warnBefore/2), nil)
			within(t, "vm.idle", l.eventTimes("idle", "vm1"), warnAt, c.poll)
			if len(l.stopTimes()) != 0 {
				t.Fatal("stopped before due")
			}
			l.restart()
			l.runUntil(stopAt.Add(c.idleAfter), nil)
			within(t, "stopVM", l.stopTimes(), stopAt, c.poll)
			within(t, "vm.autostopped", l.eventTimes("autostopped", "vm1"), stopAt, c.poll)
			within(t, "vm.idle", l.eventTimes("idle", "vm1"), warnAt, c.poll)
		})
	}
}

// Deadlines do not wait for a poll: a source that is always fresh but
// never kicks gets its warning and its stop on the dot, although
// sinks.autostop.check is far longer.
func TestEvaluatedAtTheDeadline(t *testing.T) {
	cfg := defaults()
	cfg.Check = 24 * time.Hour
	l := newLoopEnv(t, cfg, 365*24*time.Hour)
	l.src.manual = false // every reading is a fresh poll; no kicks
	l.nextPoll = t0.Add(l.interval)
	l.startVM("vm1", "img")
	l.start()
	l.runUntil(t0.Add(time.Hour), nil)
	within(t, "vm.idle", l.eventTimes("idle", "vm1"), t0.Add(cfg.IdleAfter-cfg.WarnBefore), 0)
	within(t, "stopVM", l.stopTimes(), t0.Add(cfg.IdleAfter), 0)
}

// A VM the relay cannot see is never called idle. Its log polls fail, then
// back off (no call, so no failure restarts the idle clock): no vm.idle and
// no stop, however long. Once a poll reads its log to the end again, it
// must stay quiet for the whole idle_after: warned idle_after - warn_before
// after that poll, stopped idle_after after it.
func TestBlindVMNeverCalledIdle(t *testing.T) {
	cfg := defaults()
	cfg.IdleAfter, cfg.WarnBefore = 6*time.Second, 3*time.Second
	const poll = time.Second
	l := newLoopEnv(t, cfg, poll)
	l.startVM("vm1", "img")
	l.start()
	l.src.mu.Lock()
	l.src.logFails["vm1"] = true
	l.src.mu.Unlock()
	l.runUntil(t0.Add(4*time.Second), nil) // four failed polls
	l.src.mu.Lock()
	l.src.backoff["vm1"] = true
	l.src.mu.Unlock()
	l.runUntil(t0.Add(10*time.Minute), nil)
	if n := len(l.events("idle")); n != 0 {
		t.Fatalf("%d vm.idle for a VM whose logs could not be read", n)
	}
	if n := len(l.stopTimes()); n != 0 {
		t.Fatal("stopped a VM whose logs could not be read")
	}
	// Still blind across a restart: the new process has not read its log,
	// then its polls fail too, then back off.
	l.restart()
	l.runUntil(t0.Add(10*time.Minute+2*time.Second), nil)
	l.src.mu.Lock()
	l.src.backoff["vm1"] = false
	l.src.mu.Unlock()
	l.runUntil(t0.Add(10*time.Minute+4*time.Second), nil)
	l.src.mu.Lock()
	l.src.backoff["vm1"] = true
	l.src.mu.Unlock()
	l.runUntil(t0.Add(20*time.Minute), nil)
	if n := len(l.events("idle")) + len(l.stopTimes()); n != 0 {
		t.Fatal("warned or stopped a VM whose logs could not be read, after a restart")
	}
	l.src.mu.Lock()
	l.src.backoff["vm1"] = false
	l.src.logFails["vm1"] = false
	l.src.mu.Unlock()
	recovered := l.nextPoll
	l.runUntil(recovered.Add(cfg.IdleAfter-cfg.WarnBefore-time.Millisecond), nil)
	if n := len(l.events("idle")); n != 0 {
		t.Fatal("warned less than idle_after - warn_before after the log was read again")
	}
	l.runUntil(recovered.Add(time.Minute), nil)
	within(t, "vm.idle", l.eventTimes("idle", "vm1"), recovered.Add(cfg.IdleAfter-cfg.WarnBefore), poll)
	within(t, "stopVM", l.stopTimes(), recovered.Add(cfg.IdleAfter), poll)
}

// plan, case by case: who is warned, who is stopped, and when each is due
// next.
func TestPlan(t *testing.T) {
	const idle, warn = 10 * time.Minute, 2 * time.Minute
	now := t0.Add(time.Hour)
	seen := func(v VM) VM {
		v.ID, v.State, v.ImageID = "vm1", "started", "img"
		if v.StateSince.IsZero() {
			v.StateSince = t0
		}
		if v.LastSweepOK.IsZero() {
			v.LastSweepOK = now
		}
		if v.LastLogOK.IsZero() {
			v.LastLogOK = now
		}
		return v
	}
	for _, c := range []struct {
		name       string
		vm         VM
		rec        record
		warn, stop bool
		next       time.Time
	}{
		{name: "quiet since start: warned, stop due warn_before later", vm: seen(VM{}),
			warn: true, next: now.Add(warn)},
		{name: "warned long ago: stopped", vm: seen(VM{}), rec: record{WarnedFor: t0, WarnedAt: t0.Add(idle - warn)},
			stop: true},
		{name: "warned, stop not yet due", vm: seen(VM{}), rec: record{WarnedFor: t0, WarnedAt: now.Add(-time.Minute)},
			next: now.Add(time.Minute)},
		{name: "recent line: warning due later", vm: seen(VM{LastLogLine: now.Add(-time.Minute)}),
			next: now.Add(-time.Minute + idle - warn)},
		{name: "recent signal: warning due later", vm: seen(VM{}), rec: record{LastSignal: now.Add(-time.Minute)},
			next: now.Add(-time.Minute + idle - warn)},
		{name: "log failing", vm: seen(VM{LogFailing: true, LastLogFailed: t0.Add(time.Minute)})},
		{name: "sweep failing", vm: seen(VM{SweepFailing: true, LastSweepFailed: now.Add(-time.Second)})},
		{name: "no sweep in this process", vm: VM{ID: "vm1", State: "started", StateSince: t0, LastLogOK: now}},
		{name: "log not read to the end in this process", vm: VM{ID: "vm1", State: "started", StateSince: t0, LastSweepOK: now}},
		{name: "log read again a minute ago: full idle_after from then",
			vm:   seen(VM{LastLogFailed: t0.Add(time.Minute), LogRecovered: now.Add(-time.Minute)}),
			next: now.Add(-time.Minute + idle - warn)},
		{name: "sweep recovered a minute ago", vm: seen(VM{SweepRecovered: now.Add(-time.Minute)}),
			next: now.Add(-time.Minute + idle - warn)},
		{name: "warned, no poll since: kept until one", vm: seen(VM{LastSweepOK: t0.Add(idle - warn)}),
			rec: record{WarnedFor: t0, WarnedAt: t0.Add(idle - warn)}},
		{name: "warned after a recovery this process no longer remembers: not warned again",
			vm: seen(VM{}), rec: record{WarnedFor: now.Add(-idle + warn), WarnedAt: now},
			next: now.Add(warn)},
		{name: "stopped in this start already", vm: seen(VM{}), rec: record{StoppedStart: t0}},
		{name: "not started", vm: VM{ID: "vm1", State: "stopped", StateSince: t0, LastSweepOK: now, LastLogOK: now}},
	} {
		t.Run(c.name, func(t *testing.T) {
			a := &AutoStop{o: Options{Config: Config{IdleAfter: idle, WarnBefore: warn}, LogsWatched: true},
				log: slog.New(slog.DiscardHandler)}
			p := a.plan(c.vm, c.rec, now)
			if p.warn != c.warn || p.stop != c.stop || !p.next.Equal(c.next) {
				t.Fatalf("warn %v stop %v next %v, want %v %v %v", p.warn, p.stop, p.next, c.warn, c.stop, c.next)
			}
		})
	}
}

// In dry run nothing is stopped, so "VM auto-stopped" is information, not
// a warning; a real stop stays a warning.
func TestAutoStoppedLogLevel(t *testing.T) {
	for _, dry := range []bool{true, false} {
		cfg := defaults()
		cfg.DryRun = dry
		e := newEnv(t, cfg)
		var buf bytes.Buffer
		e.as.log = slog.New(slog.NewJSONHandler(&buf, nil))
		e.startVM("vm1", "img")
		e.run(40*time.Minute, nil)
		level := ""
		for _, line := range strings.Split(buf.String(), "\n") {
			var rec struct{ Level, Msg string }
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "VM auto-stopped" {
				level = rec.Level
			}
		}
		want := map[bool]string{true: "INFO", false: "WARN"}[dry]
		if level != want {
			t.Errorf("dry run %v: \"VM auto-stopped\" logged at %q, want %s", dry, level, want)
		}
		if dry && e.sim.CallCount(cakeworksim.RouteStopVM) != 0 {
			t.Error("dry run called stopVM")
		}
	}
}
