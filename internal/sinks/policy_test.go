package sinks_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/event"
	"github.com/cakework-relay/cakework-relay/internal/sinks"
	"github.com/cakework-relay/cakework-relay/internal/sinks/sinktest"
)

// scripted answers each send with the next result of its script (the last
// one repeats) and counts the sends.
type scripted struct {
	mu     sync.Mutex
	script []sinks.Result
	sends  int
}

func (s *scripted) Send(ctx context.Context, _ event.Event) sinks.Result {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sends++
	return s.script[min(s.sends, len(s.script))-1]
}

// memAttempts is an Attempts kept in memory, resumed from a count.
type memAttempts struct {
	start   int
	retries []int
}

func (a *memAttempts) Load() int                 { return a.start }
func (a *memAttempts) Retrying(n int, err error) { a.retries = append(a.retries, n) }

// countRecorder counts what the policy reports.
type countRecorder struct {
	mu                                    sync.Mutex
	delivered, failed, retrying, disabled int
}

func (c *countRecorder) Sent(time.Duration) {}
func (c *countRecorder) Delivered()         { c.mu.Lock(); c.delivered++; c.mu.Unlock() }
func (c *countRecorder) Failed(error)       { c.mu.Lock(); c.failed++; c.mu.Unlock() }
func (c *countRecorder) Retrying(event.Event, int, time.Duration, error) {
	c.mu.Lock()
	c.retrying++
	c.mu.Unlock()
}
func (c *countRecorder) Disabled(error) { c.mu.Lock(); c.disabled++; c.mu.Unlock() }

var (
	errNo   = errors.New("target said no")
	errGone = errors.New("410 Gone")
)

func TestPolicyDeliver(t *testing.T) {
	retry := sinks.RetryConfig{Initial: time.Second, MaxInterval: 8 * time.Second, MaxAttempts: 4}
	cases := []struct {
		name    string
		script  []sinks.Result
		resumed int // attempts made by an earlier run
		want    sinks.Verdict
		// attempts counted in the Delivery, sends made now, retries recorded
		attempts, sends int
		retries         []int
		// each wait's bounds: [lo, hi]
		waits   [][2]time.Duration
		errHas  string
		disable bool
	}{
		{name: "done at once", script: []sinks.Result{sinks.Delivered()},
			want: sinks.Acked, attempts: 1, sends: 1},
		{name: "retry then done: equal jitter doubling",
			script: []sinks.Result{sinks.RetryLater(errNo, 0), sinks.RetryLater(errNo, 0), sinks.Delivered()},
			want:   sinks.Acked, attempts: 3, sends: 3, retries: []int{1, 2},
			waits: [][2]time.Duration{{500 * time.Millisecond, time.Second}, {time.Second, 2 * time.Second}}},
		{name: "retry-after longer than the backoff wins",
			script: []sinks.Result{sinks.RetryLater(errNo, 42*time.Second), sinks.Delivered()},
			want:   sinks.Acked, attempts: 2, sends: 2, retries: []int{1},
			waits: [][2]time.Duration{{42 * time.Second, 42 * time.Second}}},
		{name: "retry-after shorter than the backoff wins too",
			script:  []sinks.Result{sinks.RetryLater(errNo, 0), sinks.RetryLater(errNo, 0), sinks.RetryLater(errNo, 100*time.Millisecond), sinks.Delivered()},
			resumed: 0, want: sinks.Acked, attempts: 4, sends: 4, retries: []int{1, 2, 3},
			waits: [][2]time.Duration{{500 * time.Millisecond, time.Second}, {time.Second, 2 * time.Second}, {100 * time.Millisecond, 100 * time.Millisecond}}},
		{name: "retry-after is capped at an hour",
			script: []sinks.Result{sinks.RetryLater(errNo, 48*time.Hour), sinks.Delivered()},
			want:   sinks.Acked, attempts: 2, sends: 2, retries: []int{1},
			waits: [][2]time.Duration{{time.Hour, time.Hour}}},
		{name: "give up: dead letter at once",
			script: []sinks.Result{sinks.Fail(errNo)},
			want:   sinks.DeadLettered, attempts: 1, sends: 1, errHas: "target said no"},
		{name: "give up and disable",
			script: []sinks.Result{sinks.FailAndDisable(errGone)},
			want:   sinks.DeadLettered, attempts: 1, sends: 1, errHas: "410 Gone", disable: true},
		{name: "max attempts",
			script: []sinks.Result{sinks.RetryLater(errNo, 0)},
			want:   sinks.DeadLettered, attempts: 4, sends: 4, retries: []int{1, 2, 3}, errHas: "gave up after 4 attempts: target said no",
			waits: [][2]time.Duration{{500 * time.Millisecond, time.Second}, {time.Second, 2 * time.Second}, {2 * time.Second, 4 * time.Second}}},
		{name: "resumed count: the schedule and the budget continue",
			script: []sinks.Result{sinks.RetryLater(errNo, 0)}, resumed: 2,
			want: sinks.DeadLettered, attempts: 4, sends: 2, retries: []int{3}, errHas: "gave up after 4 attempts",
			waits: [][2]time.Duration{{2 * time.Second, 4 * time.Second}}},
		{name: "nil error is still explained",
			script: []sinks.Result{{Outcome: sinks.GiveUp}},
			want:   sinks.DeadLettered, attempts: 1, sends: 1, errHas: "unknown error"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := &scripted{script: tc.script}
			clk := sinktest.NewStepClock(time.Unix(0, 0))
			rec := &countRecorder{}
			p, err := sinks.NewPolicy(s, sinks.PolicyOptions{Name: "t", Retry: retry, Clock: clk, Recorder: rec})
			if err != nil {
				t.Fatal(err)
			}
			a := &memAttempts{start: tc.resumed}
			d := p.Deliver(context.Background(), nil, sinktest.Event("vm", "v1", "started", 1), a)
			if d.Verdict != tc.want || d.Attempts != tc.attempts || s.sends != tc.sends {
				t.Fatalf("got %v after %d attempts (%d sends), want %v after %d (%d sends); err %v",
					d.Verdict, d.Attempts, s.sends, tc.want, tc.attempts, tc.sends, d.Err)
			}
			if tc.errHas != "" && (d.Err == nil || !strings.Contains(d.Err.Error(), tc.errHas)) {
				t.Fatalf("err %v, want it to say %q", d.Err, tc.errHas)
			}
			if tc.errHas == "" && d.Err != nil {
				t.Fatalf("err %v on %v", d.Err, d.Verdict)
			}
			if !slices.Equal(a.retries, tc.retries) {
				t.Fatalf("retries recorded %v, want %v", a.retries, tc.retries)
			}
			waits := clk.Waits()
			if len(waits) != len(tc.waits) {
				t.Fatalf("waits %v, want %d", waits, len(tc.waits))
			}
			for i, w := range waits {
				if w < tc.waits[i][0] || w > tc.waits[i][1] {
					t.Fatalf("wait %d = %v, want in %v", i+1, w, tc.waits[i])
				}
			}
			if rec.retrying != len(tc.retries) || rec.failed != s.sends-rec.delivered {
				t.Fatalf("recorder %+v after %d sends", rec, s.sends)
			}
			if dis := p.Disabled() != nil; dis != tc.disable || rec.disabled != map[bool]int{true: 1}[tc.disable] {
				t.Fatalf("disabled %v (reported %d times), want %v", p.Disabled(), rec.disabled, tc.disable)
			}
		})
	}
}

// Once disabled, every later event is dead-lettered without a send, and
// the error says since when and why.
func TestPolicyDisabledSkipsSends(t *testing.T) {
	s := &scripted{script: []sinks.Result{sinks.FailAndDisable(errGone), sinks.Delivered()}}
	p, _ := sinks.NewPolicy(s, sinks.PolicyOptions{Name: "app", Clock: sinktest.NewStepClock(time.Unix(0, 0))})
	p.Deliver(context.Background(), nil, sinktest.Event("vm", "v1", "started", 1), sinks.FreshAttempts{})
	d := p.Deliver(context.Background(), nil, sinktest.Event("vm", "v2", "started", 2), sinks.FreshAttempts{})
	if d.Verdict != sinks.DeadLettered || s.sends != 1 || d.Attempts != 0 ||
		!strings.Contains(d.Err.Error(), "sink app is disabled since 1970-01-01T00:00:00Z (410 Gone)") {
		t.Fatalf("%v after %d sends: %v", d.Verdict, s.sends, d.Err)
	}
}

// Shutdown: stop ends a wait between attempts (the attempt made counts);
// a cancelled ctx aborts the send in flight (it does not count); a stop
// before the first attempt sends nothing.
func TestPolicyInterrupted(t *testing.T) {
	retry := sinks.RetryConfig{Initial: time.Minute, MaxAttempts: 5}
	ev := sinktest.Event("vm", "v1", "started", 1)

	t.Run("stop during the backoff wait", func(t *testing.T) {
		s := &scripted{script: []sinks.Result{sinks.RetryLater(errNo, 0)}}
		clk := parkedClock{waiting: make(chan time.Duration)}
		p, _ := sinks.NewPolicy(s, sinks.PolicyOptions{Name: "t", Retry: retry, Clock: clk})
		stop := make(chan struct{})
		done := make(chan sinks.Delivery, 1)
		go func() { done <- p.Deliver(context.Background(), stop, ev, sinks.FreshAttempts{}) }()
		if w := <-clk.waiting; w < 30*time.Second || w > time.Minute {
			t.Fatalf("backoff wait %v, want the first one in [30s, 1m]", w)
		}
		close(stop)
		if d := <-done; d.Verdict != sinks.Interrupted || d.Attempts != 1 || s.sends != 1 {
			t.Fatalf("%+v after %d sends, want interrupted after 1 counted attempt", d, s.sends)
		}
	})
	t.Run("send cancelled by shutdown", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		blocked := sinksFunc(func(ctx context.Context) sinks.Result {
			cancel()
			<-ctx.Done()
			return sinks.RetryLater(ctx.Err(), 0)
		})
		rec := &countRecorder{}
		p, _ := sinks.NewPolicy(blocked, sinks.PolicyOptions{Name: "t", Retry: retry, Clock: sinktest.NewStepClock(time.Unix(0, 0)), Recorder: rec})
		a := &memAttempts{start: 3}
		if d := p.Deliver(ctx, nil, ev, a); d.Verdict != sinks.Interrupted || d.Attempts != 3 || rec.failed != 0 || len(a.retries) != 0 {
			t.Fatalf("%+v, recorder %+v: a cancelled send must not count", d, rec)
		}
	})
	t.Run("stopped before the first attempt", func(t *testing.T) {
		s := &scripted{script: []sinks.Result{sinks.Delivered()}}
		p, _ := sinks.NewPolicy(s, sinks.PolicyOptions{Name: "t", Clock: sinktest.NewStepClock(time.Unix(0, 0))})
		stop := make(chan struct{})
		close(stop)
		if d := p.Deliver(context.Background(), stop, ev, sinks.FreshAttempts{}); d.Verdict != sinks.Interrupted || s.sends != 0 {
			t.Fatalf("%+v after %d sends", d, s.sends)
		}
	})
}

// parkedClock never ends a wait; it says when one begins.
type parkedClock struct{ waiting chan time.Duration }

func (parkedClock) Now() time.Time { return time.Unix(0, 0) }

func (c parkedClock) After(d time.Duration) <-chan time.Time {
	c.waiting <- d
	return nil
}

type sinksFunc func(ctx context.Context) sinks.Result

func (f sinksFunc) Send(ctx context.Context, _ event.Event) sinks.Result { return f(ctx) }

func TestNewPolicyRejectsBadInput(t *testing.T) {
	if _, err := sinks.NewPolicy(nil, sinks.PolicyOptions{Name: "t"}); err == nil || !strings.Contains(err.Error(), "nil sender") {
		t.Fatalf("nil sender: %v", err)
	}
	if _, err := sinks.NewPolicy(&scripted{}, sinks.PolicyOptions{}); err == nil || !strings.Contains(err.Error(), "name") {
		t.Fatalf("no name: %v", err)
	}
}

// The schedule the Slack flusher shares: defaults filled in, the sink's
// Retry bounds respected.
func TestScheduleDefaults(t *testing.T) {
	s := sinks.NewSchedule(sinks.RetryConfig{})
	if s.MaxAttempts() != 12 {
		t.Fatalf("max attempts %d, want 12", s.MaxAttempts())
	}
	for range 100 {
		if w := s.Wait(1, 0); w < 500*time.Millisecond || w > time.Second {
			t.Fatalf("first wait %v, want in [0.5s, 1s]", w)
		}
		if w := s.Wait(40, 0); w < 5*time.Minute || w > 10*time.Minute {
			t.Fatalf("late wait %v, want in [5m, 10m]", w)
		}
	}
	r := sinks.RetryDefaults(sinks.RetryConfig{Initial: time.Minute, MaxInterval: time.Second})
	if r.MaxInterval != time.Minute {
		t.Fatalf("MaxInterval below Initial kept: %+v", r)
	}
}
