// Package sinktest is the shared test kit of the sinks: a contract every
// Sender must meet (Run), and an environment with a real embedded NATS and
// a real bbolt to run a sinks.Runner against (NewEnv). Slack and auto-stop
// use the same helpers as the HTTP callback sink.
package sinktest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/bus"
	"github.com/cakework-relay/cakework-relay/internal/event"
	"github.com/cakework-relay/cakework-relay/internal/sinks"
	"github.com/cakework-relay/cakework-relay/internal/state"
)

// Mode is how the fake target of a contract test behaves.
type Mode int

const (
	// OK: the target accepts.
	OK Mode = iota
	// Transient: a failure a retry could fix (HTTP 503, Slack 500).
	Transient
	// Throttled: rate limited with a retry-after (HTTP 429, Slack 429).
	Throttled
	// Permanent: a failure a retry cannot fix (HTTP 400, Slack
	// channel_not_found).
	Permanent
	// Down: the target cannot be reached (connection reset or refused).
	Down
)

func (m Mode) String() string {
	return [...]string{"ok", "transient", "throttled", "permanent", "down"}[m]
}

// Fixture is one sink under contract test, pointed at a fake target.
type Fixture struct {
	Sender sinks.Sender
	// SetMode changes how the target answers from now on; retryAfter is the
	// delay Throttled asks for.
	SetMode func(m Mode, retryAfter time.Duration)
	// Delivered counts the events the target accepted.
	Delivered func() int
	// Secrets must never appear in an error or a log line: tokens, signing
	// secrets, credential headers, URL tokens.
	Secrets []string
}

// Factory builds a fresh fixture whose sender logs to log.
type Factory func(t *testing.T, log *slog.Logger) Fixture

// Run checks the Sender contract: send once and classify, honour ctx, be
// safe for concurrent use, and never leak a secret.
func Run(t *testing.T, newFixture Factory) {
	t.Helper()
	ev := Event("build", "b-contract", "failed", 1)

	t.Run("delivers", func(t *testing.T) {
		f := newFixture(t, Discard())
		before := f.Delivered()
		if r := f.Sender.Send(context.Background(), ev); r.Outcome != sinks.Done {
			t.Fatalf("Send: %v %v, want done", r.Outcome, r.Err)
		}
		if n := f.Delivered() - before; n != 1 {
			t.Fatalf("target got %d deliveries, want 1 (a sink sends once)", n)
		}
	})
	cases := []struct {
		mode  Mode
		after time.Duration
		want  sinks.Outcome
	}{
		{Transient, 0, sinks.Retry},
		{Throttled, 7 * time.Second, sinks.Retry},
		{Permanent, 0, sinks.GiveUp},
		{Down, 0, sinks.Retry},
	}
	for _, c := range cases {
		t.Run(c.mode.String(), func(t *testing.T) {
			f := newFixture(t, Discard())
			f.SetMode(c.mode, c.after)
			before := f.Delivered()
			r := f.Sender.Send(context.Background(), ev)
			if r.Outcome != c.want || r.Err == nil {
				t.Fatalf("Send: %v (err %v), want %v with an error", r.Outcome, r.Err, c.want)
			}
			if c.mode == Throttled && r.After != c.after {
				t.Fatalf("retry after %s, want the target's %s", r.After, c.after)
			}
			if f.Delivered() != before {
				t.Fatal("a failed send counted as delivered")
			}
		})
	}
	t.Run("cancelled context", func(t *testing.T) {
		f := newFixture(t, Discard())
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		start := time.Now()
		r := f.Sender.Send(ctx, ev)
		if r.Outcome == sinks.Done {
			t.Fatal("Send with a cancelled context reported done")
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("Send ignored its cancelled context for %s", d)
		}
	})
	t.Run("concurrent", func(t *testing.T) {
		f := newFixture(t, Discard())
		before := f.Delivered()
		var wg sync.WaitGroup
		errs := make(chan error, 16)
		for i := range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if r := f.Sender.Send(context.Background(), Event("vm", fmt.Sprintf("vm-%d", i), "started", i)); r.Outcome != sinks.Done {
					errs <- fmt.Errorf("send %d: %v %v", i, r.Outcome, r.Err)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		if n := f.Delivered() - before; n != 16 {
			t.Fatalf("%d delivered, want 16", n)
		}
	})
	t.Run("no secret in errors or logs", func(t *testing.T) {
		log, buf := CaptureLogs()
		f := newFixture(t, log)
		if len(f.Secrets) == 0 {
			t.Fatal("the fixture names no secrets to look for")
		}
		var text strings.Builder
		for _, m := range []Mode{OK, Transient, Throttled, Permanent, Down} {
			f.SetMode(m, time.Second)
			r := f.Sender.Send(context.Background(), ev)
			if r.Err != nil {
				fmt.Fprintf(&text, "%v\n%+v\n%#v\n", r.Err, r.Err, r.Err.Error())
			}
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if r := f.Sender.Send(ctx, ev); r.Err != nil {
			fmt.Fprintf(&text, "%v\n", r.Err)
		}
		all := text.String() + buf.String()
		for _, s := range f.Secrets {
			if s != "" && strings.Contains(all, s) {
				t.Errorf("secret %q… leaked into errors or logs:\n%s", s[:min(4, len(s))], all)
			}
		}
	})
}

// Event builds a valid event about resource kind/id; n varies the id.
func Event(kind, id, action string, n int) event.Event {
	e, err := event.New(kind, id, action, event.ID(kind, id, action, fmt.Sprint(n)), time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC), map[string]any{"n": n})
	if err != nil {
		panic(err)
	}
	return e
}

// Payload is data.n of an event built by Event.
func Payload(e event.Event) int {
	var d struct{ N int }
	_ = json.Unmarshal(e.Data, &d)
	return d.N
}

// Discard is a logger that drops everything.
func Discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// Buffer is a goroutine-safe log sink.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// CaptureLogs returns a debug-level logger writing to the buffer.
func CaptureLogs() (*slog.Logger, *Buffer) {
	buf := &Buffer{}
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}

// Env is a real embedded NATS (in-process) and a real bbolt in a temp dir.
type Env struct {
	Dir   string
	Bus   *bus.Bus
	Store *state.Store
}

// NewEnv opens the bus and the store; both are closed when t ends.
func NewEnv(t testing.TB) *Env {
	t.Helper()
	e := &Env{Dir: t.TempDir()}
	e.open(t)
	t.Cleanup(func() { e.Close() })
	return e
}

func (e *Env) open(t testing.TB) {
	t.Helper()
	b, err := bus.Open(context.Background(), bus.Options{
		StoreDir: bus.StoreDir(e.Dir), SubjectPrefix: "cakework", Stream: "CAKEWORK",
		DuplicateWindow: time.Minute, MaxAge: time.Hour,
		// One key across reopens: a restarted relay verifies what it
		// published before.
		MACKey: []byte("sinktest install key"),
	})
	if err != nil {
		t.Fatal(err)
	}
	s, err := state.Open(state.Options{Dir: e.Dir})
	if err != nil {
		b.Close(context.Background())
		t.Fatal(err)
	}
	e.Bus, e.Store = b, s
}

// Close closes the bus and the store.
func (e *Env) Close() {
	if e.Bus != nil {
		e.Bus.Close(context.Background())
	}
	if e.Store != nil {
		e.Store.Close()
	}
}

// Restart closes and reopens the bus and the store on the same files, as a
// relay restart does.
func (e *Env) Restart(t testing.TB) {
	t.Helper()
	e.Close()
	e.open(t)
}

// Publish puts ev on the event stream as the outbox would.
func (e *Env) Publish(t testing.TB, ev event.Event) {
	t.Helper()
	raw, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Bus.Publish(context.Background(), ev.NATSSubject(e.Bus.SubjectPrefix()), ev.ID, raw, nil); err != nil {
		t.Fatal(err)
	}
}

// Eventually polls cond every 10ms until it holds or timeout passes.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// StepClock is a clock whose waits end at once, moving its time forward by
// the wait. It records every wait, so tests check backoff and Retry-After
// without sleeping.
type StepClock struct {
	mu    sync.Mutex
	now   time.Time
	waits []time.Duration
}

// NewStepClock starts at t.
func NewStepClock(t time.Time) *StepClock { return &StepClock{now: t} }

func (c *StepClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *StepClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.waits = append(c.waits, d)
	if d > 0 {
		c.now = c.now.Add(d)
	}
	ch := make(chan time.Time, 1)
	ch <- c.now
	return ch
}

// Waits returns the waits asked for so far.
func (c *StepClock) Waits() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Duration(nil), c.waits...)
}
