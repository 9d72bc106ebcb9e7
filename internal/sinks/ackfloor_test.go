package sinks

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cakework-relay/cakework-relay/internal/state"
)

// Attempt records of messages at or below the ack floor (acked, but the
// record was left behind: a crash between ack and clear, or an ack whose
// confirmation was lost) are deleted when the floor is kept; the others
// stay.
func TestAckFloorSweepsAttemptRecordsOfAckedMessages(t *testing.T) {
	ctx := context.Background()
	b, st := openBusAndStore(t, embedded(t))
	var seqs []uint64
	for _, id := range []string{"e1", "e2", "e3"} {
		ack, err := b.Publish(ctx, "cakework.build."+id+".failed", id, []byte("{}"), nil)
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, ack.Sequence)
	}
	s, err := b.JetStream().Stream(ctx, b.Stream())
	if err != nil {
		t.Fatal(err)
	}
	c, err := s.CreateConsumer(ctx, jetstream.ConsumerConfig{Name: "t", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	// Records for all three, as left behind; the first two are acked.
	records := BoltRecords(st)
	if err := records.Update(ctx, func(tx RecordTx) error {
		for _, seq := range seqs {
			if err := tx.PutSink("t", attemptKey(seq), attemptRecord{Attempts: 1}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	batch, err := c.Fetch(3, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for m := range batch.Messages() {
		if n++; n <= 2 {
			if err := m.DoubleAck(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	f := &ackFloor{store: st, sink: "t", log: slog.New(slog.DiscardHandler)}
	f.setConsumer(c)
	f.save()

	left := map[uint64]bool{}
	if err := st.View(func(tx *state.Tx) error {
		for _, seq := range seqs {
			ok, err := tx.GetSink("t", attemptKey(seq), &attemptRecord{})
			if err != nil {
				return err
			}
			left[seq] = ok
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if left[seqs[0]] || left[seqs[1]] || !left[seqs[2]] {
		t.Fatalf("records left %v for seqs %v; want only the unacked %d's", left, seqs, seqs[2])
	}
}
