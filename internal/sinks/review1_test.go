package sinks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cakework-relay/cakework-relay/internal/bus"
	"github.com/cakework-relay/cakework-relay/internal/event"
	"github.com/cakework-relay/cakework-relay/internal/state"
)

// Review R1 (session 8). On an external NATS someone who may read the
// event stream and publish on relay.dlq.> (README: "the relay cannot stop
// others from publishing") knows every dead letter's Nats-Msg-Id in
// advance: <sink>:<event id>:s<stream seq>, all of it visible on the
// event stream. A forged message with that id stored first, inside
// bus.duplicate_window, makes JetStream answer the relay's real dead
// letter as a duplicate; the relay acks the event anyway, and the DLQ holds
// only the forged message, which GET /v1/dlq hides (unsigned). The event
// is gone: neither delivered nor dead-lettered.
func TestR1ForgedDeadLetterIDInsideTheWindowLosesTheEvent(t *testing.T) {
	ctx := context.Background()
	bo := embedded(t)
	bo.DuplicateWindow = 2 * time.Minute // bus.url's default
	b, err := bus.Open(ctx, bo)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(ctx)
	st, err := state.Open(state.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()

	ev, err := event.New("build", "b1", "failed", event.ID("build", "b1", "failed", "r1"), time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), map[string]any{"n": 1})
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(ev)
	ack, err := b.Publish(ctx, ev.NATSSubject(b.SubjectPrefix()), ev.ID, raw, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The attacker, having read the event (id and sequence) off the
	// stream: an unsigned message with the dead letter's id.
	m := nats.NewMsg(bus.DLQSubject("t"))
	m.Data = []byte("forged")
	m.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("t:%s:s%d", ev.ID, ack.Sequence))
	if _, err := b.JetStream().PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}

	r, err := NewRunner(refusingSender{}, Options{Name: "t", Kind: "test", Bus: b, Store: st, AckWait: 2 * time.Second, DeliverAll: true,
		Retry: RetryConfig{Initial: time.Second, MaxInterval: time.Minute, MaxAttempts: 1}})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer r.Stop(ctx)
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := b.JetStream().Consumer(ctx, "CAKEWORK", DurableName("t"))
		if err != nil {
			t.Fatal(err)
		}
		info, err := c.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.NumPending == 0 && info.NumAckPending == 0 && info.AckFloor.Stream >= ack.Sequence {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the event was not acked: %+v", info)
		}
		time.Sleep(10 * time.Millisecond)
	}
	dls, _, err := ListDLQ(ctx, b, "t", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(dls) != 1 {
		t.Fatalf("the sink refused the event and it was acked, but the DLQ lists %d dead letters of the relay's, want 1 (the relay's publish was answered as a duplicate of the forged message)", len(dls))
	}
}

// Review R1 (session 8). The look for a redelivered event's dead letter
// reads the sink's dead letters from the event's stream timestamp on,
// oldest first, and stops after 10,000. When a backlog was dead-lettered
// (a target refusing everything during a flood), the dead letters of the
// events ahead of this one were written between its publish and its own
// dead letter: with more than 10,000 of them the look never reaches it,
// and a crash between the DLQ publish and the ack, with the relay down past
// bus.duplicate_window, leaves the dead letter on the DLQ twice, contrary to
// README ("A dead letter is written once even when the relay stops between
// writing it and the ack ...").
func TestR1DeadLetterLookMissesItBehindAFloodOfDeadLetters(t *testing.T) {
	ctx := context.Background()
	var target string
	var filler int
	redeliverAfterDeadLetterCount(t, func(t *testing.T, r1 *Runner, o deadLetterOut) {
		// The backlog ahead of the event, dead-lettered by this run
		// before it got to the event: signed, on the sink's subject.
		b := r1.o.Bus
		filler = dlqLookMax + 500
		for from := 0; from < filler; from += 1000 {
			for i := from; i < min(from+1000, filler); i++ {
				h := nats.Header{}
				h.Set(bus.HdrDLQSink, "t")
				if _, err := b.PublishAsync(bus.DLQSubject("t"), fmt.Sprintf("t:other%d:s%d", i, i+1000), []byte(`{"x":1}`), h); err != nil {
					t.Fatal(err)
				}
			}
			select {
			case <-b.JetStream().PublishAsyncComplete():
			case <-time.After(30 * time.Second):
				t.Fatal("filler dead letters not acknowledged")
			}
		}
		target = r1.dead.msgID(o)
		publishDeadLetter(t, r1, o)
	}, func(t *testing.T, b *bus.Bus) {
		// Count the event's dead letters on the sink's subject.
		s, err := b.JetStream().Stream(ctx, b.DLQStream())
		if err != nil {
			t.Fatal(err)
		}
		c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{bus.DLQSubject("t")}})
		if err != nil {
			t.Fatal(err)
		}
		n, seen := 0, 0
		for seen < filler+1 {
			batch, err := c.Fetch(5000, jetstream.FetchMaxWait(2*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			got := 0
			for m := range batch.Messages() {
				got++
				seen++
				if m.Headers().Get(jetstream.MsgIDHeader) == target {
					n++
				}
			}
			if got == 0 {
				break
			}
		}
		if n != 1 {
			t.Fatalf("the event's dead letter is on the DLQ %d times, want once (the look read %d of the %d dead letters stored since the event)", n, dlqLookMax, filler+1)
		}
	})
}

// redeliverAfterDeadLetterCount is redeliverAfterDeadLetter with the
// check left to check (the DLQ holds more than ListDLQ's page).
func redeliverAfterDeadLetterCount(t *testing.T, before func(*testing.T, *Runner, deadLetterOut), check func(*testing.T, *bus.Bus)) {
	ctx := context.Background()
	b, err := bus.Open(ctx, embedded(t))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(ctx)
	st, err := state.Open(state.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	opts := func() Options {
		return Options{Name: "t", Kind: "test", Bus: b, Store: st, AckWait: 2 * time.Second,
			Retry: RetryConfig{Initial: time.Second, MaxInterval: time.Minute, MaxAttempts: 3}}
	}
	first := &blockingSender{started: make(chan struct{})}
	r1, err := NewRunner(first, opts())
	if err != nil {
		t.Fatal(err)
	}
	if err := r1.Start(ctx); err != nil {
		t.Fatal(err)
	}
	ev, err := event.New("build", "b1", "failed", event.ID("build", "b1", "failed", "1"), time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), map[string]any{"n": 1})
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(ev)
	subject := ev.NATSSubject(b.SubjectPrefix())
	ack, err := b.Publish(ctx, subject, ev.ID, raw, nil)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-first.started:
	case <-time.After(5 * time.Second):
		t.Fatal("the first run never got the event")
	}
	before(t, r1, deadLetterOut{ev: ev, natsSubject: subject, data: raw, err: errors.New("target refuses this event"), attempts: 1, streamSeq: ack.Sequence})
	sctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	_ = r1.Stop(sctx)
	cancel()
	waitWindow(t, b)

	r2, err := NewRunner(refusingSender{}, opts())
	if err != nil {
		t.Fatal(err)
	}
	if err := r2.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer r2.Stop(ctx)
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := b.JetStream().Consumer(ctx, "CAKEWORK", DurableName("t"))
		if err != nil {
			t.Fatal(err)
		}
		info, err := c.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.NumPending == 0 && info.NumAckPending == 0 && info.Delivered.Consumer == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the redelivered event was not acked: %+v", info)
		}
		time.Sleep(10 * time.Millisecond)
	}
	check(t, b)
}

// BenchmarkR1DeadLetterLookMiss is one look (storedBefore) for a dead
// letter that is not there, over 10,000 dead letters of the sink stored
// since the event, each carrying a 1 KiB event: what every redelivered
// event dead-lettered during such a backlog costs (the look reads whole
// messages, bodies included).
func BenchmarkR1DeadLetterLookMiss(b *testing.B) {
	ctx := context.Background()
	o := testBusOptions()
	o.StoreDir = b.TempDir()
	bb, err := bus.Open(ctx, o)
	if err != nil {
		b.Fatal(err)
	}
	defer bb.Close(ctx)
	since := time.Now()
	body := make([]byte, 1024)
	for from := 0; from < dlqLookMax; from += 1000 {
		for i := from; i < from+1000; i++ {
			h := nats.Header{}
			h.Set(bus.HdrDLQSink, "t")
			if _, err := bb.PublishAsync(bus.DLQSubject("t"), fmt.Sprintf("t:other%d:s%d", i, i), body, h); err != nil {
				b.Fatal(err)
			}
		}
		<-bb.JetStream().PublishAsyncComplete()
	}
	d := &deadLetters{name: "t", bus: bb}
	b.ResetTimer()
	for range b.N {
		seq, err := d.storedBefore(ctx, "t:missing:s1", since)
		if err != nil || seq != 0 {
			b.Fatal(seq, err)
		}
	}
}

// Review R1 (session 8). storedBefore honours its context only in the
// calls before the reads and when a fetch comes back empty: between
// fetches it does not look at ctx, so a look whose deadline passed (or
// whose stop was closed) reads on to dlqLookMax and answers "not found"
// (0, nil) instead of ctx's error. Then the 5 s bound of README is not
// one, a stop waits for the reads, and a slow NATS never counts as a
// timed-out look (lookOff). (Passes vacuously on a machine fast enough
// to read 10,000 dead letters within 500 ms.)
func TestR1DeadLetterLookHonoursItsDeadline(t *testing.T) {
	ctx := context.Background()
	o := embedded(t)
	bb, err := bus.Open(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	defer bb.Close(ctx)
	since := time.Now()
	body := make([]byte, 1024)
	for from := 0; from < dlqLookMax; from += 1000 {
		for i := from; i < from+1000; i++ {
			if _, err := bb.PublishAsync(bus.DLQSubject("t"), fmt.Sprintf("t:other%d:s%d", i, i), body, nil); err != nil {
				t.Fatal(err)
			}
		}
		select {
		case <-bb.JetStream().PublishAsyncComplete():
		case <-time.After(30 * time.Second):
			t.Fatal("filler dead letters not acknowledged")
		}
	}
	d := &deadLetters{name: "t", bus: bb}
	const deadline = 500 * time.Millisecond
	lctx, cancel := context.WithTimeout(ctx, deadline)
	defer cancel()
	t0 := time.Now()
	seq, err := d.storedBefore(lctx, "t:missing:s1", since)
	took := time.Since(t0)
	if err == nil && lctx.Err() != nil {
		t.Fatalf("the look answered (%d, nil) %v after it started, past its %v deadline; want the context's error", seq, took.Round(time.Millisecond), deadline)
	}
	t.Logf("look: %d, %v in %v", seq, err, took)
}
