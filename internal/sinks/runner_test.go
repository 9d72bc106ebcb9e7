package sinks_test

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cakework-relay/cakework-relay/internal/bus"
	"github.com/cakework-relay/cakework-relay/internal/clock"
	"github.com/cakework-relay/cakework-relay/internal/event"
	"github.com/cakework-relay/cakework-relay/internal/sinks"
	"github.com/cakework-relay/cakework-relay/internal/sinks/sinktest"
)

// fakeSender answers with a script and records what it was sent.
type fakeSender struct {
	mu     sync.Mutex
	answer func(n int, e event.Event) sinks.Result
	sent   []event.Event
	block  chan struct{} // when set, Send waits for it or ctx
}

func (f *fakeSender) Send(ctx context.Context, e event.Event) sinks.Result {
	f.mu.Lock()
	f.sent = append(f.sent, e)
	n := 0
	for _, s := range f.sent {
		if s.ID == e.ID {
			n++
		}
	}
	answer, block := f.answer, f.block
	f.mu.Unlock()
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return sinks.RetryLater(ctx.Err(), 0)
		}
	}
	if answer == nil {
		return sinks.Delivered()
	}
	return answer(n, e)
}

func (f *fakeSender) sentIDs() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var ids []string
	for _, e := range f.sent {
		ids = append(ids, e.ID)
	}
	return ids
}

func newRunner(t *testing.T, env *sinktest.Env, s sinks.Sender, mod func(*sinks.Options)) *sinks.Runner {
	t.Helper()
	o := sinks.Options{
		Name: "t", Kind: "test", Bus: env.Bus, Store: env.Store, Clock: sinktest.NewStepClock(time.Now()),
		Retry: sinks.RetryConfig{Initial: time.Second, MaxInterval: time.Minute, MaxAttempts: 3}, AckWait: 2 * time.Second,
	}
	if mod != nil {
		mod(&o)
	}
	r, err := sinks.NewRunner(s, o)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Stop(context.Background()) })
	return r
}

func TestMaxAttemptsToDLQWithHeaders(t *testing.T) {
	env := sinktest.NewEnv(t)
	f := &fakeSender{answer: func(n int, _ event.Event) sinks.Result {
		return sinks.RetryLater(&testErr{"target said no"}, 0)
	}}
	r := newRunner(t, env, f, nil)
	ev := sinktest.Event("build", "b1", "failed", 1)
	env.Publish(t, ev)
	sinktest.Eventually(t, 5*time.Second, "dead letter", func() bool { return r.Status().DeadLettered == 1 })
	if n := len(f.sentIDs()); n != 3 {
		t.Fatalf("%d attempts, want max_attempts 3", n)
	}
	s, _ := env.Bus.JetStream().Stream(context.Background(), env.Bus.DLQStream())
	m, err := s.GetLastMsgForSubject(context.Background(), bus.DLQSubject("t"))
	if err != nil {
		t.Fatal(err)
	}
	h := m.Header
	if h.Get(bus.HdrDLQSink) != "t" || h.Get(bus.HdrDLQAttempts) != "3" || h.Get(bus.HdrDLQEventID) != ev.ID ||
		h.Get(bus.HdrDLQSubject) != "cakework.build.b1.failed" || !strings.Contains(h.Get(bus.HdrDLQError), "target said no") ||
		h.Get(bus.HdrDLQTime) == "" {
		t.Fatalf("headers %v", h)
	}
	var got event.Event
	if err := json.Unmarshal(m.Data, &got); err != nil || got.ID != ev.ID {
		t.Fatalf("payload is not the event: %v", err)
	}
	st := r.Status()
	if st.Failed != 3 || st.Retried != 2 || !strings.Contains(st.LastError, "target said no") {
		t.Fatalf("status %+v", st)
	}
}

type testErr struct{ s string }

func (e *testErr) Error() string { return e.s }

func TestFilterSkipsOthers(t *testing.T) {
	env := sinktest.NewEnv(t)
	f := &fakeSender{}
	r := newRunner(t, env, f, func(o *sinks.Options) { o.Events = []string{"vm.auto*"} })
	env.Publish(t, sinktest.Event("vm", "v1", "started", 1))
	want := sinktest.Event("vm", "v1", "autostopped", 2)
	env.Publish(t, want)
	env.Publish(t, sinktest.Event("build", "b1", "failed", 3))
	sinktest.Eventually(t, 5*time.Second, "delivery", func() bool { return r.Status().Delivered == 1 })
	// Everything the consumer gets is handled: sent or skipped, and acked.
	info := waitAllAcked(t, env)
	if ids := f.sentIDs(); len(ids) != 1 || ids[0] != want.ID {
		t.Fatalf("sent %v", ids)
	}
	if info.NumAckPending != 0 {
		t.Fatalf("skipped message not acked: %+v", info)
	}
}

// waitAllAcked waits until sink t's consumer has nothing left to deliver
// and nothing unacknowledged, and returns its info.
func waitAllAcked(t *testing.T, env *sinktest.Env) *jetstream.ConsumerInfo {
	t.Helper()
	var info *jetstream.ConsumerInfo
	sinktest.Eventually(t, 5*time.Second, "every message acked", func() bool {
		cons, err := env.Bus.JetStream().Consumer(context.Background(), "CAKEWORK", "sink_t")
		if err != nil {
			return false
		}
		info, err = cons.Info(context.Background())
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0
	})
	return info
}

func TestUndecodableToDLQ(t *testing.T) {
	env := sinktest.NewEnv(t)
	r := newRunner(t, env, &fakeSender{}, nil)
	if _, err := env.Bus.Publish(context.Background(), "cakework.vm.x.started", "junk", []byte("not json"), nil); err != nil {
		t.Fatal(err)
	}
	sinktest.Eventually(t, 5*time.Second, "dead letter", func() bool { return r.Status().DeadLettered == 1 })
}

// TestStopHandsBackInFlight: a send blocked at shutdown is cancelled when
// Stop's time is up; it and the queued ones come back to the next runner in
// order.
func TestStopHandsBackInFlight(t *testing.T) {
	env := sinktest.NewEnv(t)
	f := &fakeSender{block: make(chan struct{})}
	r := newRunner(t, env, f, nil)
	var evs []event.Event
	for i := range 5 {
		e := sinktest.Event("build", "b1", "log", i)
		evs = append(evs, e)
		env.Publish(t, e)
	}
	sinktest.Eventually(t, 5*time.Second, "first send", func() bool { return len(f.sentIDs()) == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	start := time.Now()
	err := r.Stop(ctx)
	cancel()
	if err == nil || time.Since(start) > 3*time.Second {
		t.Fatalf("stop: %v after %s", err, time.Since(start))
	}
	f2 := &fakeSender{}
	r2 := newRunner(t, env, f2, nil)
	sinktest.Eventually(t, 5*time.Second, "redelivery", func() bool { return r2.Status().Delivered == 5 })
	ids := f2.sentIDs()
	for i, e := range evs {
		if ids[i] != e.ID {
			var want []string
			for _, e := range evs {
				want = append(want, e.ID)
			}
			t.Fatalf("redelivered out of order:\n got %v\nwant %v", ids, want)
		}
	}
}

// TestKeepAliveHoldsLongRetries: a head retried for longer than AckWait is
// not redelivered behind its own back.
func TestKeepAliveHoldsLongRetries(t *testing.T) {
	env := sinktest.NewEnv(t)
	var mu sync.Mutex
	var first time.Time
	release := false
	f := &fakeSender{answer: func(int, event.Event) sinks.Result {
		mu.Lock()
		defer mu.Unlock()
		if first.IsZero() {
			first = time.Now()
		}
		if release {
			return sinks.Delivered()
		}
		return sinks.RetryLater(&testErr{"busy"}, 0)
	}}
	const ackWait = 300 * time.Millisecond
	r := newRunner(t, env, f, func(o *sinks.Options) {
		o.AckWait = ackWait
		// AckWait runs on the server's clock, so this test needs real
		// time to pass; retries are paced on the real clock too.
		o.Clock = clock.Real{}
		o.Retry = sinks.RetryConfig{Initial: 50 * time.Millisecond, MaxInterval: 50 * time.Millisecond, MaxAttempts: 1000}
	})
	ev := sinktest.Event("vm", "v1", "idle", 0)
	env.Publish(t, ev)
	sinktest.Eventually(t, 10*time.Second, "retries spanning three AckWaits", func() bool {
		mu.Lock()
		defer mu.Unlock()
		if first.IsZero() || time.Since(first) < 3*ackWait {
			return false
		}
		release = true
		return true
	})
	sinktest.Eventually(t, 5*time.Second, "delivery", func() bool { return r.Status().Delivered == 1 })
	// A redelivery while held would have been counted by the server, and
	// sent again before the ack.
	info := waitAllAcked(t, env)
	// A duplicate delivered while the first was held would still be in the
	// runner (acking the first acks the sequence): wait until it holds
	// nothing before counting.
	sinktest.Eventually(t, 5*time.Second, "nothing held", func() bool { return r.Status().InFlight == 0 })
	if st := r.Status(); st.Delivered != 1 {
		t.Fatalf("delivered %d times: redelivered while held", st.Delivered)
	}
	// The server counts every delivery, redeliveries included.
	if info.Delivered.Consumer != 1 || info.NumRedelivered != 0 {
		t.Fatalf("server delivered %d times (%d redelivered), want once", info.Delivered.Consumer, info.NumRedelivered)
	}
	if n := len(f.sentIDs()); n < 3 {
		t.Fatalf("%d sends: the head was not retried while held", n)
	}
}

// closingSender counts Close calls (a sender with background work, like
// the Slack one).
type closingSender struct {
	fakeSender
	mu     sync.Mutex
	closed int
}

func (c *closingSender) Close(context.Context) error {
	c.mu.Lock()
	c.closed++
	c.mu.Unlock()
	return nil
}

func TestFailedStartStopsEverySink(t *testing.T) {
	env := sinktest.NewEnv(t)
	m := sinks.NewManager(sinks.ManagerOptions{Bus: env.Bus, Store: env.Store})
	var ss []*closingSender
	var rs []*sinks.Runner
	for _, name := range []string{"ok", "bad.name", "later"} { // "bad.name": not a valid durable name
		s := &closingSender{}
		r, err := m.Add(s, sinks.Options{Name: name})
		if err != nil {
			t.Fatal(err)
		}
		ss, rs = append(ss, s), append(rs, r)
	}
	if err := m.Start(context.Background()); err == nil {
		t.Fatal("start with an invalid durable name succeeded")
	}
	for i, s := range ss {
		if s.closed != 1 {
			t.Errorf("sink %s: sender closed %d times after the failed start, want 1 (its goroutines leak)", rs[i].Name(), s.closed)
		}
	}
	// Stopping a runner whose Start failed must not panic.
	if err := rs[1].Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
}
