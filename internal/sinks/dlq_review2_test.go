package sinks

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cakework-relay/cakework-relay/internal/clock"
	"github.com/cakework-relay/cakework-relay/internal/event"
)

// Review R2, session 8: two ways a dead letter was stored twice, fixed.

// The store loop retries a dead letter's publish every second while it
// fails, and each try used to rewrite the intent with its own start time
// (deadLetters.put -> storedAttempts.storing(msgID, time.Now())). A try
// whose publish was stored but whose answer was lost (a connection drop,
// a publish that timed out client-side and was stored) is followed by
// tries that move the intent's time on; the relay is killed during them
// (a NATS outage, a liveness probe) and comes back past the duplicate
// window. The look searches only [intent-2s, intent+12s): the dead letter
// stored by the earlier try, more than 2 s before the last intent, is not
// found and is stored again. README ("Sinks are at least once") admits a
// second dead letter only when the record cannot be written, the look
// fails, or the clocks are more than 2 s apart.
//
// Simulated: the first try's publish is stored; 2.5 s later a retry of
// the same dead letter (what store's loop does after an error) is
// answered "duplicate" (ours); the run stops before the ack. The intent
// now keeps the first try's time (storedAttempts.storing).
func TestDeadLetterStoredByAnEarlierTryIsFoundAfterARetryMovedTheIntent(t *testing.T) {
	bo := embedded(t)
	bo.DuplicateWindow = 4 * time.Second // the retry 2.5 s later is inside it
	redeliverAfterDeadLetter(t, bo, func(t *testing.T, r1 *Runner, o deadLetterOut) {
		// One record for both tries, as store's loop keeps.
		a := &storedAttempts{store: r1.o.Records, sink: r1.o.Name, log: r1.log, it: &item{seq: o.streamSeq, delivered: 1}}
		if _, err := r1.dead.put(context.Background(), a, o); err != nil { // the first try: stored (its answer lost)
			t.Fatal(err)
		}
		time.Sleep(2500 * time.Millisecond)
		if _, err := r1.dead.put(context.Background(), a, o); err != nil { // a later try: answered duplicate (ours)
			t.Fatal(err)
		}
	}, nil, 1, 1)
}

// The ack of a dead-lettered message used to be fire-and-forget, and the
// runner then cleared the message's record, intent and all. When that ack
// did not reach the server (a connection drop on an external NATS) the
// event came back after AckWait with no record: no look, a fresh attempt
// budget, and, past bus.duplicate_window, a second dead letter. Now the
// record is cleared only once the server confirms the ack
// (deadLetters.ack, TestDeadLetterRecordIsKeptUntilItsAckIsConfirmed).
//
// Simulated: the dead letter is stored with its intent, and the ack is
// lost, so the record stays (what ack does when DoubleAck fails).
func TestDeadLetterWhoseAckWasLostIsNotStoredTwice(t *testing.T) {
	redeliverAfterDeadLetter(t, embedded(t), func(t *testing.T, r1 *Runner, o deadLetterOut) {
		a := &storedAttempts{store: r1.o.Records, sink: r1.o.Name, log: r1.log, it: &item{seq: o.streamSeq, delivered: 1}}
		if _, err := r1.dead.put(context.Background(), a, o); err != nil {
			t.Fatal(err)
		}
	}, nil, 1, 1)
}

// deadLetters.ack clears the message's record only when the server
// confirms the ack: an ack to a consumer that is gone (the connection
// dropped, another member took the sink) keeps the intent for the
// redelivery.
func TestDeadLetterRecordIsKeptUntilItsAckIsConfirmed(t *testing.T) {
	ctx := context.Background()
	b, st := openBusAndStore(t, embedded(t))
	log := slog.New(slog.DiscardHandler)
	d := &deadLetters{name: "t", bus: b, clock: clock.Real{}, log: log}
	s, err := b.JetStream().Stream(ctx, b.Stream())
	if err != nil {
		t.Fatal(err)
	}
	hold := func(msgID, consumer string) (*item, *storedAttempts) {
		t.Helper()
		ack, err := b.Publish(ctx, "cakework.build."+msgID+".failed", msgID, []byte("{}"), nil)
		if err != nil {
			t.Fatal(err)
		}
		c, err := s.CreateConsumer(ctx, jetstream.ConsumerConfig{Name: consumer, AckPolicy: jetstream.AckExplicitPolicy,
			FilterSubject: "cakework.build." + msgID + ".failed"})
		if err != nil {
			t.Fatal(err)
		}
		m, err := c.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			t.Fatal(err)
		}
		it := &item{msg: m, seq: ack.Sequence, delivered: 1, ev: event.Event{ID: msgID}}
		a := &storedAttempts{store: BoltRecords(st), sink: "t", log: log, it: it}
		if err := a.storing("dl-"+msgID, time.Now()); err != nil {
			t.Fatal(err)
		}
		return it, a
	}
	kept := func(it *item) bool {
		a := &storedAttempts{store: BoltRecords(st), sink: "t", log: log, it: &item{seq: it.seq, delivered: 2}}
		rec := a.record()
		return rec.DeadLetter != nil
	}

	it, a := hold("e1", "c1")
	d.ack(it, a)
	if kept(it) {
		t.Fatal("the record was kept after a confirmed ack")
	}

	it, a = hold("e2", "c2")
	if err := s.DeleteConsumer(ctx, "c2"); err != nil {
		t.Fatal(err)
	}
	d.ack(it, a)
	if !kept(it) {
		t.Fatal("the record was cleared though the ack was not confirmed (the consumer was gone)")
	}
}

// A run that recorded its intent and stopped before publishing, then a run
// that looked, did not find the dead letter, stored it and stopped before
// the ack: the intent must name the second run's publish, or a third run
// looks at the first run's time and stores the dead letter again.
func TestDeadLetterIntentMovesToThePublishAfterALookThatFoundNothing(t *testing.T) {
	ctx := context.Background()
	b, st := openBusAndStore(t, embedded(t))
	log := slog.New(slog.DiscardHandler)
	d := &deadLetters{name: "t", bus: b, clock: clock.Real{}, log: log}
	o := deadLetterOut{ev: event.Event{ID: "e1"}, data: []byte("{}"), err: errors.New("refused"), attempts: 3, streamSeq: 7}
	run := func(delivered uint64) (*item, *storedAttempts) {
		it := &item{seq: 7, delivered: delivered, ev: o.ev}
		return it, &storedAttempts{store: BoltRecords(st), sink: "t", log: log, it: it}
	}

	_, a1 := run(1)
	if err := a1.storing(d.msgID(o), time.Now().Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}
	it2, a2 := run(2)
	if d.alreadyStored(nil, it2, a2) {
		t.Fatal("found a dead letter that was never stored")
	}
	published := time.Now()
	if _, err := d.put(ctx, a2, o); err != nil {
		t.Fatal(err)
	}
	it3, a3 := run(3)
	if at := a3.record().DeadLetter.At; at.Before(published.Add(-time.Second)) {
		t.Fatalf("the intent still says %s, before the publish at %s", at, published)
	}
	if !d.alreadyStored(nil, it3, a3) {
		t.Fatal("the third run did not find the dead letter the second one stored")
	}
}
