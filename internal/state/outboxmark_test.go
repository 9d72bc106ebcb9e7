package state

import (
	"context"
	"fmt"
	"testing"
)

// A mark covers what was in both queues when it was taken; OutboxWaits
// sees an entry waiting between two marks, and not one acknowledged and
// held for the bus sync.
func TestOutboxMarks(t *testing.T) {
	ctx := context.Background()
	s := openJ(t, t.TempDir(), 0)
	s.SetBusSync(func() error { return nil })
	for i := range 3 {
		if err := s.Update(ctx, func(tx *Tx) error { return tx.Enqueue("s", fmt.Sprint("u", i), nil) }); err != nil {
			t.Fatal(err)
		}
		accept(t, s, fmt.Sprint("w", i))
	}
	end, err := s.OutboxEnd()
	if err != nil {
		t.Fatal(err)
	}
	accept(t, s, "later")
	if err := s.Update(ctx, func(tx *Tx) error { return tx.Enqueue("s", "u-later", nil) }); err != nil {
		t.Fatal(err)
	}
	es, err := s.PeekOutbox(100)
	if err != nil || len(es) != 8 {
		t.Fatalf("peek: %d entries, %v", len(es), err)
	}
	for _, e := range es {
		later := e.MsgID == "evt-later" || e.MsgID == "u-later"
		if end.Covers(e) == later {
			t.Errorf("mark covers %s: %v", e.MsgID, !later)
		}
	}
	waits := func(after OutboxMark, want bool) {
		t.Helper()
		if got, err := s.OutboxWaits(after, end); err != nil || got != want {
			t.Errorf("OutboxWaits(%+v, %+v) = %v, %v; want %v", after, end, got, err, want)
		}
	}
	waits(OutboxMark{}, true)
	waits(end, false)
	// All of bbolt's and the first two webhooks' looked at: the third waits.
	var bolt, journal []OutboxEntry
	for _, e := range es {
		if e.journal {
			journal = append(journal, e)
		} else {
			bolt = append(bolt, e)
		}
	}
	waits(OutboxMark{}.With(bolt...).With(journal[:2]...), true)
	// Journal all looked at, bbolt's first only: the next two wait until
	// acknowledged (held for the sync, then deleted by the checkpoint).
	looked := OutboxMark{}.With(bolt[:1]...).With(journal...)
	waits(looked, true)
	if err := s.DeleteOutbox(ctx, bolt[1:3]); err != nil {
		t.Fatal(err)
	}
	waits(looked, false)
	if err := s.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	waits(looked, false)
}
