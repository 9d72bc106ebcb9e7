package slack

import (
	"context"
	"testing"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/clock"
	"github.com/cakework-relay/cakework-relay/internal/sinks"
	"github.com/cakework-relay/cakework-relay/internal/sinks/sinktest"
	"github.com/cakework-relay/cakework-relay/internal/state"
)

// A summary Slack refuses stays pending and is tried again when the
// framework's schedule for this sink (its retry settings) says, not on a
// schedule of the flusher's own; once posted it leaves the store.
func TestFailedSummaryRetriesOnTheSinkSchedule(t *testing.T) {
	clk := clock.NewFake(t0)
	f := newFakeSlack(t, clk.Now)
	c := botConfig(f)
	c.Flood = Flood{Threshold: 1, Window: 10 * time.Second}
	c.Retry = sinks.RetryConfig{Initial: 20 * time.Second, MaxInterval: time.Minute}
	st := openStore(t, t.TempDir())
	s := newSender(t, c, st, clk, nil)

	if r := sendAdvancing(t, s, clk, vmEvent(t, "vm-1", "started", clk.Now())); r.Outcome != sinks.Done {
		t.Fatal(r.Err)
	}
	if r := s.Send(context.Background(), vmEvent(t, "vm-2", "started", clk.Now())); r.Outcome != sinks.Done {
		t.Fatal(r.Err)
	}
	if n := len(f.Posts()); n != 1 {
		t.Fatalf("%d posts, want 1 and the second event folded", n)
	}
	readPending := func() (p pending, ok bool) {
		_ = st.View(func(tx *state.Tx) (err error) { ok, err = tx.GetSink(c.Name, floodKey("vm.started"), &p); return err })
		return p, ok
	}

	f.setMode(sinktest.Transient, 0)
	eventually(t, "the flusher waiting for the window", func() bool { return clk.Waiters() > 0 })
	clk.Advance(c.Flood.Window)
	failedAt := clk.Now()
	var p pending
	eventually(t, "a failed attempt on record", func() bool { p, _ = readPending(); return p.Attempts == 1 })
	// The sink's schedule: first wait in [Initial/2, Initial].
	if w := p.NextTry.Sub(failedAt); w < 10*time.Second || w > 20*time.Second || p.Count != 1 || p.LastError == "" {
		t.Fatalf("pending %+v: next try in %v, want the sink's first backoff in [10s, 20s]", p, w)
	}

	f.setMode(sinktest.OK, 0)
	eventually(t, "the flusher waiting for the retry", func() bool { return clk.Waiters() > 0 })
	clk.Advance(20 * time.Second)
	eventually(t, "the summary posted on retry", func() bool { return len(f.Posts()) == 2 })
	eventually(t, "the pending summary cleared", func() bool { _, ok := readPending(); return !ok })
}
