package state

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

var seenT0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// seen records a webhook id as ingest does, through Accept (the one path
// that records ids).
func seen(t *testing.T, s *Store, receiver, id string, now, exp time.Time) bool {
	t.Helper()
	var dup bool
	if err := s.Accept(context.Background(), func(tx *AcceptTx) error {
		var err error
		dup, err = tx.SeenWebhook(receiver, id, now, exp)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return dup
}

// has looks an id up as ingest does (an Accept that records nothing
// writes nothing).
func has(s *Store, receiver, id string, now time.Time) bool {
	var ok bool
	s.Accept(context.Background(), func(tx *AcceptTx) error { ok = tx.HasWebhook(receiver, id, now); return nil })
	return ok
}

// inOneBatch runs fns as concurrent Accepts that share one journal batch:
// the accept loop is held by a blocking Accept until all of them are
// queued.
func inOneBatch(t *testing.T, s *Store, fns ...func(*AcceptTx) error) []error {
	t.Helper()
	release := make(chan struct{})
	blocked := make(chan struct{}, 1)
	go s.Accept(context.Background(), func(*AcceptTx) error {
		select {
		case blocked <- struct{}{}:
		default:
		}
		<-release
		return nil
	})
	<-blocked
	errs := make([]error, len(fns))
	var wg sync.WaitGroup
	for i, fn := range fns {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = s.Accept(context.Background(), fn) }()
		// Queue them in order.
		for len(s.acc.reqs) < i+1 {
			time.Sleep(time.Millisecond)
		}
	}
	close(release)
	wg.Wait()
	return errs
}

func TestSeenWebhookSurvivesRestartUntilExpiry(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	if seen(t, s, "cakework", "d:msg_1", seenT0, seenT0.Add(time.Hour)) {
		t.Fatal("first sighting reported as duplicate")
	}
	if !seen(t, s, "cakework", "d:msg_1", seenT0.Add(time.Minute), seenT0.Add(2*time.Hour)) {
		t.Fatal("second sighting not a duplicate")
	}
	// Another receiver has its own ids.
	if seen(t, s, "github", "d:msg_1", seenT0, seenT0.Add(time.Hour)) {
		t.Fatal("id of another receiver reported as duplicate")
	}
	s.Close()

	s = open(t, dir)
	if got := s.seen.len(); got != 2 {
		t.Fatalf("index rebuilt with %d ids, want 2", got)
	}
	if !seen(t, s, "cakework", "d:msg_1", seenT0.Add(30*time.Minute), seenT0.Add(2*time.Hour)) {
		t.Fatal("duplicate not detected after restart")
	}
	if has(s, "cakework", "d:msg_1", seenT0.Add(time.Hour)) {
		t.Fatal("id still counts at its expiry")
	}
	// Expired but not yet pruned: seen again, it is remembered anew, and
	// the new expiry wins over the old entry, also after a restart.
	if seen(t, s, "cakework", "d:msg_1", seenT0.Add(90*time.Minute), seenT0.Add(3*time.Hour)) {
		t.Fatal("expired id reported as duplicate")
	}
	s.Close()
	s = open(t, dir)
	if !has(s, "cakework", "d:msg_1", seenT0.Add(150*time.Minute)) {
		t.Fatal("renewed id lost on restart")
	}
}

func TestExpireWebhookIDsPrunesIndex(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	ctx := context.Background()
	seen(t, s, "r", "old", seenT0, seenT0.Add(time.Minute))
	seen(t, s, "r", "live", seenT0, seenT0.Add(time.Hour))
	// "again" expired, then was seen anew: pruning its old entry must keep
	// the new one.
	seen(t, s, "r", "again", seenT0, seenT0.Add(time.Minute))
	seen(t, s, "r", "again", seenT0.Add(2*time.Minute), seenT0.Add(time.Hour))
	// Expiry reads bbolt, where the checkpoint (every 100ms) puts ids.
	if err := s.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	n, err := s.ExpireWebhookIDs(ctx, seenT0.Add(10*time.Minute), 100)
	if err != nil || n != 2 {
		t.Fatalf("expired %d, %v; want 2", n, err)
	}
	if got := s.seen.len(); got != 2 {
		t.Fatalf("index holds %d ids, want 2", got)
	}
	if has(s, "r", "old", seenT0) {
		t.Fatal("pruned id still counts")
	}
	if !has(s, "r", "again", seenT0.Add(10*time.Minute)) || !has(s, "r", "live", seenT0.Add(10*time.Minute)) {
		t.Fatal("live id pruned")
	}
	s.Close()
	s = open(t, dir)
	if got := s.seen.len(); got != 2 {
		t.Fatalf("index rebuilt with %d ids, want 2", got)
	}
}

func TestSeenWebhookDuplicateInOneTxAndOneBatch(t *testing.T) {
	s := open(t, t.TempDir())
	exp := seenT0.Add(time.Hour)
	if err := s.Accept(context.Background(), func(tx *AcceptTx) error {
		if dup, _ := tx.SeenWebhook("r", "a", seenT0, exp); dup {
			t.Error("first sighting reported as duplicate")
		}
		if dup, _ := tx.SeenWebhook("r", "a", seenT0, exp); !dup {
			t.Error("second sighting in one tx not a duplicate")
		}
		if !tx.HasWebhook("r", "a", seenT0) {
			t.Error("HasWebhook misses an id recorded in this tx")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	var dups [4]bool
	fns := make([]func(*AcceptTx) error, len(dups))
	for i := range fns {
		fns[i] = func(tx *AcceptTx) error {
			var err error
			dups[i], err = tx.SeenWebhook("r", "b", seenT0, exp)
			return err
		}
	}
	for i, err := range inOneBatch(t, s, fns...) {
		if err != nil {
			t.Fatalf("update %d: %v", i, err)
		}
	}
	if dups != [4]bool{false, true, true, true} {
		t.Fatalf("duplicates in one batch: %v, want only the first accepted", dups)
	}
}

func TestFailedAcceptLeavesNoSeenID(t *testing.T) {
	s := open(t, t.TempDir())
	exp := seenT0.Add(time.Hour)
	boom := errors.New("boom")
	var firstDup, afterDup bool
	errs := inOneBatch(t, s,
		// Succeeds, in the batch with the failure.
		func(tx *AcceptTx) error {
			var err error
			firstDup, err = tx.SeenWebhook("r", "kept", seenT0, exp)
			return err
		},
		// Records an id, then fails: dropped alone.
		func(tx *AcceptTx) error {
			if _, err := tx.SeenWebhook("r", "phantom", seenT0, exp); err != nil {
				return err
			}
			return boom
		},
		// Must not see the phantom id.
		func(tx *AcceptTx) error {
			var err error
			afterDup, err = tx.SeenWebhook("r", "phantom", seenT0, exp)
			return err
		},
	)
	if errs[0] != nil || !errors.Is(errs[1], boom) || errs[2] != nil {
		t.Fatalf("errors %v", errs)
	}
	if firstDup {
		t.Fatal("the first function took its own id for a duplicate")
	}
	if afterDup {
		t.Fatal("id of the rolled-back function counted as seen")
	}
	// The third function recorded "phantom"; the failed one's record must
	// not linger either way.
	if !has(s, "r", "kept", seenT0) || !has(s, "r", "phantom", seenT0) {
		t.Fatal("committed ids missing")
	}
	if got := s.seen.len(); got != 2 {
		t.Fatalf("index holds %d ids, want 2", got)
	}

	// A failed Accept alone: its id is neither in the index nor on disk.
	err := s.Accept(context.Background(), func(tx *AcceptTx) error {
		if _, err := tx.SeenWebhook("r", "gone", seenT0, exp); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatal(err)
	}
	if has(s, "r", "gone", seenT0) || seen(t, s, "r", "gone", seenT0, exp) {
		t.Fatal("id of a failed accept counted as seen")
	}
}

func TestMigrationDropsOldWebhookIDs(t *testing.T) {
	dir := t.TempDir()
	// A schema 1 file as the previous relay wrote it: the id in
	// webhook_ids and in the expiry index.
	db, err := bolt.Open(filepath.Join(dir, FileName), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	exp := make([]byte, 8)
	binary.BigEndian.PutUint64(exp, uint64(seenT0.Add(time.Hour).UnixNano()))
	err = db.Update(func(tx *bolt.Tx) error {
		if err := migrations[0](tx); err != nil {
			return err
		}
		if err := tx.Bucket(bMeta).Put([]byte(schemaKey), u64(1)); err != nil {
			return err
		}
		if err := tx.Bucket(bWebhookIDs).Put([]byte("cakework/d:old"), exp); err != nil {
			return err
		}
		return tx.Bucket(bWebhookExpiry).Put(append(exp, "cakework/d:old"...), nil)
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	s := open(t, dir)
	if !seen(t, s, "cakework", "d:old", seenT0, seenT0.Add(2*time.Hour)) {
		t.Fatal("id remembered by schema 1 not a duplicate")
	}
	if has(s, "cakework", "d:old", seenT0.Add(time.Hour)) {
		t.Fatal("migrated id outlives its expiry")
	}
	s.db.View(func(tx *bolt.Tx) error {
		if tx.Bucket(bWebhookIDs) != nil {
			t.Error("webhook_ids bucket still there")
		}
		return nil
	})
}

func TestTrimWebhookIDsBoundsTheIndex(t *testing.T) {
	s := open(t, t.TempDir())
	ctx := context.Background()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := 0; i < 100; i++ {
		seen(t, s, "r", fmt.Sprint(i), now, now.Add(time.Hour+time.Duration(i)*time.Second))
	}
	// Trimming reads bbolt, where the checkpoint (every 100ms) puts ids.
	if err := s.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	if n, err := s.TrimWebhookIDs(ctx, 60, 1000); err != nil || n != 40 {
		t.Fatalf("trimmed %d, %v; want 40", n, err)
	}
	if s.WebhookIDCount() != 60 {
		t.Fatalf("%d remembered, want 60", s.WebhookIDCount())
	}
	if has(s, "r", "0", now) || !has(s, "r", "99", now) {
		t.Error("trim did not drop the oldest ids first")
	}
	if n, _ := s.TrimWebhookIDs(ctx, 60, 1000); n != 0 {
		t.Fatalf("trimmed again: %d", n)
	}
}
