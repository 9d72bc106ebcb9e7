package sinks

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cakework-relay/cakework-relay/internal/bus"
	"github.com/cakework-relay/cakework-relay/internal/event"
	"github.com/cakework-relay/cakework-relay/internal/natstest"
	"github.com/cakework-relay/cakework-relay/internal/state"
)

// blockingSender signals its first send and holds it until cancelled.
type blockingSender struct {
	once    sync.Once
	started chan struct{}
}

func (b *blockingSender) Send(ctx context.Context, _ event.Event) Result {
	b.once.Do(func() { close(b.started) })
	<-ctx.Done()
	return RetryLater(ctx.Err(), 0)
}

// refusingSender refuses every event for good: each is dead-lettered at
// once.
type refusingSender struct{}

func (refusingSender) Send(context.Context, event.Event) Result {
	return Fail(errors.New("target refuses this event"))
}

// A run stored an event's dead letter and stopped before its ack (a
// crash); the relay stayed down past bus.duplicate_window, so JetStream no
// longer drops a repeat. The next run gets the event again and finds its
// dead letter on the DLQ: it acks, and the DLQ holds it once. (Review of
// session 7.)
func TestRedeliveredDeadLetterIsNotStoredTwice(t *testing.T) {
	var r2 *Runner
	redeliverAfterDeadLetter(t, embedded(t), publishDeadLetter, func(r *Runner) { r2 = r }, 1, 1)
	if n := r2.dead.looks.Load(); n != 1 {
		t.Fatalf("%d looks on the DLQ, want 1 (the record says the dead letter was being stored)", n)
	}
}

// publishDeadLetter stores o's dead letter as store does: the intent in
// the message's record, then the publish.
func publishDeadLetter(t *testing.T, r1 *Runner, o deadLetterOut) {
	a := &storedAttempts{store: r1.o.Records, sink: r1.o.Name, log: r1.log, it: &item{seq: o.streamSeq, delivered: 1}}
	if _, err := r1.dead.put(context.Background(), a, o); err != nil {
		t.Fatal(err)
	}
}

// On an external NATS whose relay user may not create consumers on the
// DLQ stream, the look times out and the dead letter is stored again: at
// least once, not held back.
func TestRedeliveredDeadLetterLookRefusedStoresIt(t *testing.T) {
	api := "$JS.API."
	srv := natstest.Start(t, server.Options{
		Users: []*server.User{{Username: "relay", Password: "pw", Permissions: &server.Permissions{
			Publish: &server.SubjectPermission{
				Allow: []string{"cakework.>", "relay.dlq.>", "$JS.>"},
				Deny:  []string{api + "CONSUMER.CREATE.CAKEWORK_DLQ", api + "CONSUMER.CREATE.CAKEWORK_DLQ.>"},
			},
			Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX.>"}},
		}}},
	})
	o := testBusOptions()
	o.URL = "nats://relay:pw@" + srv.Addr().String()
	var r2 *Runner
	redeliverAfterDeadLetter(t, o, publishDeadLetter, func(r *Runner) {
		r.dead.lookTimeout = 300 * time.Millisecond
		r2 = r
	}, 2, 2)
	if n := r2.dead.lookTimeouts.Load(); n != 1 {
		t.Fatalf("%d looks timed out, want the one refused", n)
	}
}

// A message on the sink's DLQ subject with the dead letter's id that the
// relay did not sign (someone else who may publish on an external NATS)
// does not stand for it: the dead letter is stored.
func TestRedeliveredEventIsDeadLetteredDespiteAForgedOne(t *testing.T) {
	redeliverAfterDeadLetter(t, embedded(t), func(t *testing.T, r1 *Runner, o deadLetterOut) {
		m := nats.NewMsg(bus.DLQSubject("t"))
		m.Data = o.data
		m.Header.Set(jetstream.MsgIDHeader, r1.dead.msgID(o))
		if _, err := r1.o.Bus.JetStream().PublishMsg(context.Background(), m); err != nil {
			t.Fatal(err)
		}
	}, nil, 1, 2)
}

// testBusOptions are the bus's options in these tests: the shortest
// duplicate window JetStream takes. The window runs on the server's clock,
// so the tests wait it out (waitWindow), for about 0.2 s.
func testBusOptions() bus.Options {
	return bus.Options{SubjectPrefix: "cakework", Stream: "CAKEWORK", DuplicateWindow: 100 * time.Millisecond, MaxAge: time.Hour,
		MACKey: []byte("dlq twice test install key")}
}

// publishBuildFailed publishes a build.failed event (key makes its id) on
// b's stream, as the relay would, and returns it with its JSON, subject
// and stream sequence.
func publishBuildFailed(t *testing.T, b *bus.Bus, key string) (event.Event, []byte, string, uint64) {
	t.Helper()
	ev, err := event.New("build", "b1", "failed", event.ID("build", "b1", "failed", key), time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), map[string]any{"n": 1})
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(ev)
	subject := ev.NATSSubject(b.SubjectPrefix())
	ack, err := b.Publish(context.Background(), subject, ev.ID, raw, nil)
	if err != nil {
		t.Fatal(err)
	}
	return ev, raw, subject, ack.Sequence
}

// openBusAndStore opens a bus with bo and a state store in a temporary
// directory, both closed when the test ends.
func openBusAndStore(t *testing.T, bo bus.Options) (*bus.Bus, *state.Store) {
	t.Helper()
	ctx := context.Background()
	b, err := bus.Open(ctx, bo)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close(ctx) })
	st, err := state.Open(state.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return b, st
}

// embedded is testBusOptions with an embedded server.
func embedded(t *testing.T) bus.Options {
	o := testBusOptions()
	o.StoreDir = filepath.Join(t.TempDir(), "nats")
	return o
}

// redeliverAfterDeadLetter runs a sink until it holds an event, calls
// before (what the run wrote to the DLQ before it crashed), stops it
// without an ack, waits out the duplicate window, and lets the next run
// dead-letter the redelivered event. Then the DLQ stream holds total
// messages on the sink's subject, signed of them written by the relay.
// next, when set, sees the next run before it starts.
func redeliverAfterDeadLetter(t *testing.T, bo bus.Options, before func(*testing.T, *Runner, deadLetterOut), next func(*Runner), signed, total int) {
	redeliverAfterDeadLetterThen(t, bo, before, next, func(t *testing.T, b *bus.Bus, r2 *Runner, ev event.Event) {
		checkDeadLetters(t, b, r2, ev, signed, total)
	})
}

// redeliverAfterDeadLetterThen is redeliverAfterDeadLetter with the check
// of the DLQ left to check.
func redeliverAfterDeadLetterThen(t *testing.T, bo bus.Options, before func(*testing.T, *Runner, deadLetterOut), next func(*Runner), check func(t *testing.T, b *bus.Bus, r2 *Runner, ev event.Event)) {
	ctx := context.Background()
	b, st := openBusAndStore(t, bo)
	opts := func() Options {
		return Options{Name: "t", Kind: "test", Bus: b, Store: st, AckWait: 2 * time.Second,
			Retry: RetryConfig{Initial: time.Second, MaxInterval: time.Minute, MaxAttempts: 3}}
	}

	// The first run: it holds the event, stores its dead letter as
	// store does, and stops before the ack.
	first := &blockingSender{started: make(chan struct{})}
	r1, err := NewRunner(first, opts())
	if err != nil {
		t.Fatal(err)
	}
	if err := r1.Start(ctx); err != nil {
		t.Fatal(err)
	}
	ev, raw, subject, seq := publishBuildFailed(t, b, "1")
	select {
	case <-first.started:
	case <-time.After(5 * time.Second):
		t.Fatal("the first run never got the event")
	}
	before(t, r1, deadLetterOut{ev: ev, natsSubject: subject, data: raw, err: errors.New("target refuses this event"), attempts: 1, streamSeq: seq})
	sctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	_ = r1.Stop(sctx) // the send is cut off and the event handed back, unacked
	cancel()
	waitWindow(t, b)

	// The next run gets it again (the server's second delivery) and
	// dead-letters it.
	r2, err := NewRunner(refusingSender{}, opts())
	if err != nil {
		t.Fatal(err)
	}
	if next != nil {
		next(r2)
	}
	if err := r2.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer r2.Stop(ctx)
	waitConsumer(t, b, 20*time.Second, "the redelivered event was not acked", func(info *jetstream.ConsumerInfo) bool {
		return info.NumPending == 0 && info.NumAckPending == 0 && info.Delivered.Consumer == 2
	})
	check(t, b, r2, ev)
}

// checkDeadLetters: the DLQ stream holds total messages on the sink's
// subject, signed of them written by the relay, and r2 counted one.
func checkDeadLetters(t *testing.T, b *bus.Bus, r2 *Runner, ev event.Event, signed, total int) {
	ctx := context.Background()
	dls, _, err := ListDLQ(ctx, b, "t", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(dls) != signed || dls[0].EventID != ev.ID {
		t.Fatalf("%d dead letters of the relay's on the DLQ (%+v), want %d", len(dls), dls, signed)
	}
	s, err := b.JetStream().Stream(ctx, b.DLQStream())
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(bus.DLQSubject("t")))
	if err != nil {
		t.Fatal(err)
	}
	if n := info.State.Subjects[bus.DLQSubject("t")]; n != uint64(total) {
		t.Fatalf("%d messages on %s, want %d", n, bus.DLQSubject("t"), total)
	}
	if got := r2.Status().DeadLettered; got != 1 {
		t.Errorf("status counts %d dead letters, want 1", got)
	}
}

// waitWindow waits until the DLQ stream's duplicate window has passed
// over everything stored so far: a probe stored now is no longer
// answered as a duplicate.
func waitWindow(t *testing.T, b *bus.Bus) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	first := true
	for {
		ack, err := b.Publish(context.Background(), bus.DLQSubject("probe"), "probe", []byte("x"), nil)
		if err != nil {
			t.Fatal(err)
		}
		if !first && !ack.Duplicate {
			return
		}
		first = false
		if time.Now().After(deadline) {
			t.Fatal("the duplicate window never passed")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitConsumer waits up to d until the sink's consumer satisfies done;
// then it fails with what and the consumer's state.
func waitConsumer(t *testing.T, b *bus.Bus, d time.Duration, what string, done func(*jetstream.ConsumerInfo) bool) {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(d)
	for {
		c, err := b.JetStream().Consumer(ctx, "CAKEWORK", DurableName("t"))
		if err != nil {
			t.Fatal(err)
		}
		info, err := c.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if done(info) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %+v", what, info)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
