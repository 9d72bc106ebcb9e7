package sinks

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cakework-relay/cakework-relay/internal/bus"
	"github.com/cakework-relay/cakework-relay/internal/clock"
	"github.com/cakework-relay/cakework-relay/internal/event"
	"github.com/cakework-relay/cakework-relay/internal/state"
)

// On an external NATS someone who may read the event stream and publish
// on relay.dlq.> (README: "the relay cannot stop others from publishing")
// knew every dead letter's Nats-Msg-Id in advance: <sink>:<event
// id>:s<stream seq>, all of it visible on the event stream. A forged
// message with that id stored first, inside bus.duplicate_window, made
// JetStream answer the relay's real dead letter as a duplicate; the relay
// acked the event anyway, and the DLQ held only the forged message, which
// GET /v1/dlq hides (unsigned): the event was lost. The id is keyed now,
// so the old, predictable one takes nothing. (Review R1, session 8.)
func TestForgedDeadLetterIDInsideTheWindowDoesNotLoseTheEvent(t *testing.T) {
	ctx := context.Background()
	bo := embedded(t)
	bo.DuplicateWindow = 2 * time.Minute // bus.url's default
	b, st := openBusAndStore(t, bo)
	ev, _, _, seq := publishBuildFailed(t, b, "r1")
	// The attacker, having read the event (id and sequence) off the
	// stream: an unsigned message with the dead letter's id.
	m := nats.NewMsg(bus.DLQSubject("t"))
	m.Data = []byte("forged")
	m.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("t:%s:s%d", ev.ID, seq))
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
	waitConsumer(t, b, 10*time.Second, "the event was not acked", func(info *jetstream.ConsumerInfo) bool {
		return info.NumPending == 0 && info.NumAckPending == 0 && info.AckFloor.Stream >= seq
	})
	dls, _, err := ListDLQ(ctx, b, "t", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(dls) != 1 {
		t.Fatalf("the sink refused the event and it was acked, but the DLQ lists %d dead letters of the relay's, want 1 (the relay's publish was answered as a duplicate of the forged message)", len(dls))
	}
}

// The look for a redelivered event's dead letter read the sink's dead
// letters from the event's stream timestamp on, oldest first, and stopped
// after 10,000. When a backlog was dead-lettered (a target refusing
// everything during a flood), the dead letters of the events ahead of this
// one were written between its publish and its own dead letter: with more
// than 10,000 of them the look never reached it, and a crash between the
// DLQ publish and the ack, with the relay down past bus.duplicate_window,
// left the dead letter on the DLQ twice. Now the look starts at the time
// recorded just before the publish (the intent), after the flood.
// (Review R1, session 8.)
func TestDeadLetterLookFindsItBehindAFloodOfDeadLetters(t *testing.T) {
	ctx := context.Background()
	var target string
	var filler int
	redeliverAfterDeadLetterThen(t, embedded(t), func(t *testing.T, r1 *Runner, o deadLetterOut) {
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
	}, nil, func(t *testing.T, b *bus.Bus, _ *Runner, _ event.Event) {
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

// BenchmarkDeadLetterLookMiss is one look (storedBefore) for a dead
// letter that is not there, with 10,000 dead letters of the sink in the
// look's time range, each carrying a 1 KiB event: the worst case, where
// the count bound ends the look (it reads headers only). Only a
// redelivered event whose dead letter was being stored looks at all.
func BenchmarkDeadLetterLookMiss(b *testing.B) {
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

// storedBefore honoured its context only in the calls before the reads and
// when a fetch came back empty: a look whose deadline passed (or whose
// stop was closed) read on to dlqLookMax and answered "not found" (0,
// nil) instead of ctx's error, so the 5 s bound of README was not one, a
// stop waited for the reads, and a slow NATS never counted as a timed-out
// look (lookOff). (Review R1, session 8.) The deadline is far shorter
// than reading 10,000 dead letters' headers takes (about 500 ms here), so
// the look cannot finish inside it.
func TestDeadLetterLookHonoursItsDeadline(t *testing.T) {
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
	const deadline = 50 * time.Millisecond
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

// A redelivered event whose record says no dead letter was being stored
// (the run before stopped while sending it) is dead-lettered without a
// look: ordinary redeliveries cost no read of the DLQ.
func TestOrdinaryRedeliveryDoesNotLookForADeadLetter(t *testing.T) {
	var r2 *Runner
	redeliverAfterDeadLetter(t, embedded(t), func(*testing.T, *Runner, deadLetterOut) {}, func(r *Runner) { r2 = r }, 1, 1)
	if n := r2.dead.looks.Load(); n != 0 {
		t.Fatalf("%d looks on the DLQ for a redelivery with no dead letter being stored, want none", n)
	}
}

// Defence in depth, for a key that leaked (or ids that were predictable):
// a message someone else stored under the dead letter's own id inside the
// duplicate window gets the relay's answer "duplicate"; the relay checks
// the message it names, finds it is not its own, and stores the dead letter
// under a fresh id.
func TestForgedHolderOfTheDeadLetterIDInsideTheWindowGetsItAFreshID(t *testing.T) {
	ctx := context.Background()
	bo := embedded(t)
	bo.DuplicateWindow = 2 * time.Minute
	b, err := bus.Open(ctx, bo)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(ctx)
	ev, raw, subject, seq := publishBuildFailed(t, b, "r1")
	d := &deadLetters{name: "t", bus: b, clock: clock.Real{}, log: slog.New(slog.DiscardHandler)}
	o := deadLetterOut{ev: ev, natsSubject: subject, data: raw, err: errors.New("target refuses this event"), attempts: 1, streamSeq: seq}
	m := nats.NewMsg(bus.DLQSubject("t"))
	m.Data = []byte("forged")
	m.Header.Set(jetstream.MsgIDHeader, d.msgID(o))
	forged, err := b.JetStream().PublishMsg(ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	seq, err = d.publish(ctx, o, nil)
	if err != nil {
		t.Fatal(err)
	}
	if seq == forged.Sequence {
		t.Fatalf("the dead letter was answered as the forged message %d", seq)
	}
	dls, _, err := ListDLQ(ctx, b, "t", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(dls) != 1 || dls[0].ID != seq || dls[0].EventID != ev.ID {
		t.Fatalf("the DLQ lists %+v, want the relay's dead letter %d", dls, seq)
	}
}

// Dead-letter ids are keyed by the install key: another key gives
// another id, and the id shows neither the event id nor the stream
// sequence.
func TestDeadLetterIDsAreKeyed(t *testing.T) {
	ctx := context.Background()
	b, err := bus.Open(ctx, embedded(t))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(ctx)
	d := &deadLetters{name: "t", bus: b}
	o := deadLetterOut{ev: event.Event{ID: "0123456789abcdef"}, streamSeq: 4711}
	id := d.msgID(o)
	if id != d.msgID(o) {
		t.Fatal("the id of one failure is not stable")
	}
	if strings.Contains(id, o.ev.ID) || strings.Contains(id, "4711") || !strings.HasPrefix(id, "t:") {
		t.Fatalf("id %q shows what anyone can read off the event stream", id)
	}
	if r := d.msgID(deadLetterOut{ev: o.ev, replayOf: 9}); r == id {
		t.Fatal("a replay's dead letter has the id of the first one")
	}
	b.SetMACKey([]byte("another install"))
	if other := d.msgID(o); other == id {
		t.Fatal("another install key gives the same id")
	}
}

// The intent is written before the publish and kept by a retry's record;
// when it cannot be written, the dead letter is stored anyway.
func TestDeadLetterIntentIsRecordedAndItsFailureDoesNotHoldTheDeadLetter(t *testing.T) {
	ctx := context.Background()
	b, st := openBusAndStore(t, embedded(t))
	log := slog.New(slog.DiscardHandler)
	d := &deadLetters{name: "t", bus: b, clock: clock.Real{}, log: log}
	o := deadLetterOut{ev: event.Event{ID: "e1"}, data: []byte("{}"), err: errors.New("refused"), attempts: 3, streamSeq: 7}

	a := &storedAttempts{store: BoltRecords(st), sink: "t", log: log, it: &item{seq: 7, delivered: 1}}
	before := time.Now()
	if _, err := d.put(ctx, a, o); err != nil {
		t.Fatal(err)
	}
	// The next run's view of the record: the intent, and a retry keeps it.
	next := &storedAttempts{store: BoltRecords(st), sink: "t", log: log, it: &item{seq: 7, delivered: 2}}
	next.Load()
	next.Retrying(4, errors.New("again"))
	last := &storedAttempts{store: BoltRecords(st), sink: "t", log: log, it: &item{seq: 7, delivered: 3}}
	rec := last.record()
	if rec.Attempts != 4 || rec.DeadLetter == nil || rec.DeadLetter.MsgID != d.msgID(o) || rec.DeadLetter.At.Before(before.Add(-time.Millisecond)) {
		t.Fatalf("record %+v (intent %+v), want 4 attempts and the intent to store %s", rec, rec.DeadLetter, d.msgID(o))
	}

	// A store that refuses writes: the dead letter is stored all the same.
	broken, err := state.Open(state.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	broken.Close()
	a = &storedAttempts{store: BoltRecords(broken), sink: "t", log: log, it: &item{seq: 8, delivered: 1}}
	o.streamSeq = 8
	seq, err := d.put(ctx, a, o)
	if err != nil || seq == 0 {
		t.Fatalf("put with an unwritable record: %d, %v; want the dead letter stored", seq, err)
	}
}
