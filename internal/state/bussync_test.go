package state

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/state/statetest"
)

// Events the bus acknowledged leave the journal only after the bus synced
// its files: the embedded server acknowledges from the page cache, and a
// machine crash before its own fsync would lose them.
func TestAckedEventsStayInTheJournalUntilTheBusSyncs(t *testing.T) {
	dir := t.TempDir()
	s := openJ(t, dir, 0)
	fail := errors.New("disk gone")
	calls := 0
	s.SetBusSync(func() error { calls++; return fail })
	acceptAck(t, s, 10, 4)
	if err := s.Checkpoint(context.Background()); err != nil {
		t.Fatal(err)
	}
	if calls != 1 {
		t.Fatalf("the checkpoint called the bus sync %d times, want 1", calls)
	}
	if ids := outboxIDs(t, openJ(t, statetest.CrashCopy(t, dir), 0)); len(ids) != 10 || ids[0] != "evt-b0" {
		t.Fatalf("the sync failed, yet after a crash the outbox holds %v, want evt-b0..evt-b9", ids)
	}

	s.SetBusSync(func() error { calls++; return nil })
	if err := s.Checkpoint(context.Background()); err != nil {
		t.Fatal(err)
	}
	if ids := outboxIDs(t, openJ(t, statetest.CrashCopy(t, dir), 0)); len(ids) != 6 || ids[0] != "evt-b4" {
		t.Fatalf("after the sync and a crash the outbox holds %v, want evt-b4..evt-b9", ids)
	}
	// Nothing newly acknowledged: no sync.
	n := calls
	if err := s.Checkpoint(context.Background()); err != nil {
		t.Fatal(err)
	}
	if calls != n {
		t.Errorf("a checkpoint with nothing newly acknowledged synced the bus")
	}
}

// Only what was acknowledged before the sync began is covered by it.
func TestCheckpointRecordsWhatWasAckedBeforeTheSync(t *testing.T) {
	dir := t.TempDir()
	s := openJ(t, dir, 0)
	acceptN(t, s, 10)
	es := peek(t, s, 10)
	if err := s.DeleteOutbox(context.Background(), es[:4]); err != nil {
		t.Fatal(err)
	}
	s.SetBusSync(func() error {
		// Acknowledged while the sync runs: not necessarily on disk.
		return s.DeleteOutbox(context.Background(), es[4:8])
	})
	if err := s.Checkpoint(context.Background()); err != nil {
		t.Fatal(err)
	}
	if ids := outboxIDs(t, openJ(t, statetest.CrashCopy(t, dir), 0)); len(ids) != 6 || ids[0] != "evt-b4" {
		t.Fatalf("after a crash the outbox holds %v, want evt-b4..evt-b9", ids)
	}
}

// An acknowledged outbox entry (a polled event) is deleted only by a
// checkpoint whose bus sync began after its acknowledgement; until then the
// publisher does not see it again.
func TestOutboxEntriesStayUntilTheBusSyncs(t *testing.T) {
	dir := t.TempDir()
	// Checkpoints only when called: an ack kicks the background one, which
	// would (rightly) delete what this test holds with a sync of its own.
	s, err := Open(Options{Dir: dir, LockTimeout: 100 * time.Millisecond, CheckpointEvery: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if err := s.Update(context.Background(), func(tx *Tx) error {
		for i := range 4 {
			if err := tx.Enqueue("cakework.vm.v1.started", fmt.Sprint("vm-", i), []byte(`{}`)); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	es, err := s.PeekOutbox(10)
	if err != nil || len(es) != 4 {
		t.Fatalf("peek: %d entries, %v", len(es), err)
	}
	s.SetBusSync(func() error { return errors.New("disk gone") })
	if err := s.DeleteOutbox(context.Background(), es[:2]); err != nil {
		t.Fatal(err)
	}
	if ids := outboxIDs(t, s); !slices.Equal(ids, []string{"vm-2", "vm-3"}) {
		t.Fatalf("after the ack the publisher sees %v, want vm-2, vm-3", ids)
	}
	if s.OutboxDepth() != 4 {
		t.Fatalf("outbox depth %d, want 4 (acknowledged entries count until deleted)", s.OutboxDepth())
	}
	if err := s.Checkpoint(context.Background()); err != nil {
		t.Fatal(err)
	}
	if s.BusSyncError() == nil {
		t.Error("BusSyncError is nil after a failed sync")
	}
	if ids := outboxIDs(t, openJ(t, statetest.CrashCopy(t, dir), 0)); len(ids) != 4 {
		t.Fatalf("the sync failed, yet after a crash the outbox holds %v, want all 4", ids)
	}

	s.SetBusSync(func() error {
		// Acknowledged while the sync runs: not covered by it.
		return s.DeleteOutbox(context.Background(), es[2:3])
	})
	if err := s.Checkpoint(context.Background()); err != nil {
		t.Fatal(err)
	}
	if s.BusSyncError() != nil {
		t.Errorf("BusSyncError after a good sync: %v", s.BusSyncError())
	}
	if ids := outboxIDs(t, openJ(t, statetest.CrashCopy(t, dir), 0)); !slices.Equal(ids, []string{"vm-2", "vm-3"}) {
		t.Fatalf("after the sync and a crash the outbox holds %v, want vm-2, vm-3", ids)
	}
	if ids := outboxIDs(t, s); !slices.Equal(ids, []string{"vm-3"}) {
		t.Fatalf("the publisher sees %v, want vm-3", ids)
	}
	s.SetBusSync(func() error { return nil })
	if err := s.Checkpoint(context.Background()); err != nil {
		t.Fatal(err)
	}
	if ids := outboxIDs(t, openJ(t, statetest.CrashCopy(t, dir), 0)); !slices.Equal(ids, []string{"vm-3"}) {
		t.Fatalf("after the next sync and a crash the outbox holds %v, want vm-3", ids)
	}
	if s.OutboxDepth() != 1 {
		t.Fatalf("outbox depth %d, want 1", s.OutboxDepth())
	}
	// A peek from before a checkpoint's delete can hand the publisher an
	// entry already gone; acknowledging it again changes nothing.
	if err := s.DeleteOutbox(context.Background(), es[:3]); err != nil {
		t.Fatal(err)
	}
	if err := s.Checkpoint(context.Background()); err != nil {
		t.Fatal(err)
	}
	if s.OutboxDepth() != 1 {
		t.Fatalf("after acknowledging deleted entries again the outbox depth is %d, want 1", s.OutboxDepth())
	}
	if ids := outboxIDs(t, s); !slices.Equal(ids, []string{"vm-3"}) {
		t.Fatalf("the publisher sees %v, want vm-3", ids)
	}
}
