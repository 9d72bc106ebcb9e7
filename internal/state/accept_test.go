package state

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/journal"
	"github.com/cakework-relay/cakework-relay/internal/state/statetest"
)

var jNow = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

// openJ opens a store whose checkpoint only runs when asked (or at Close),
// so a test decides what bbolt holds when it takes a crash copy.
func openJ(t *testing.T, dir string, segBytes int64) *Store {
	t.Helper()
	s, err := Open(Options{Dir: dir, LockTimeout: 100 * time.Millisecond, CheckpointEvery: time.Hour, JournalSegmentBytes: segBytes})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// accept journals one webhook the way ingest does: dedup on its id, a
// watch, and an event. It reports whether it was new.
func accept(t *testing.T, s *Store, id string) bool {
	t.Helper()
	var dup bool
	err := s.Accept(context.Background(), func(tx *AcceptTx) error {
		seen, err := tx.SeenWebhook("r", id, jNow, jNow.Add(time.Hour))
		if err != nil || seen {
			dup = seen
			return err
		}
		raw, err := EncodeQueuedWatch(KindBuild, id, Watch{Source: "webhook", AddedAt: jNow})
		if err != nil {
			return err
		}
		if err := tx.QueueWatch(raw); err != nil {
			return err
		}
		return tx.Enqueue("cakework.build."+id+".succeeded", "evt-"+id, []byte(`{"id":"`+id+`"}`))
	})
	if err != nil {
		t.Fatal(err)
	}
	return !dup
}

// acceptAck accepts webhooks b0..b<n-1> and acknowledges the first ack of
// their events, as the publisher does.
func acceptAck(t *testing.T, s *Store, n, ack int) {
	t.Helper()
	acceptN(t, s, n)
	if err := s.DeleteOutbox(context.Background(), peek(t, s, ack)); err != nil {
		t.Fatal(err)
	}
}

// acceptN accepts the webhooks b0 to b<n-1>.
func acceptN(t *testing.T, s *Store, n int) {
	t.Helper()
	for i := range n {
		accept(t, s, fmt.Sprint("b", i))
	}
}

// peek is the first n outbox entries; there must be n.
func peek(t *testing.T, s *Store, n int) []OutboxEntry {
	t.Helper()
	es, err := s.PeekOutbox(n)
	if err != nil || len(es) != n {
		t.Fatalf("peek: %d entries, %v", len(es), err)
	}
	return es
}

func outboxIDs(t *testing.T, s *Store) []string {
	t.Helper()
	es, err := s.PeekOutbox(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, e := range es {
		ids = append(ids, e.MsgID)
	}
	return ids
}

func watchedBuilds(t *testing.T, s *Store) map[string]Watch {
	t.Helper()
	if _, err := s.ApplyWatchQueue(context.Background()); err != nil {
		t.Fatal(err)
	}
	var ws map[string]Watch
	if err := s.View(func(tx *Tx) error {
		var err error
		ws, err = tx.Watches(KindBuild)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return ws
}

func seenID(t *testing.T, s *Store, id string) bool {
	t.Helper()
	return has(s, "r", id, jNow)
}

func TestAcceptedWebhooksSurviveACrashBeforeAnyCheckpoint(t *testing.T) {
	dir := t.TempDir()
	s := openJ(t, dir, 0)
	for i := range 20 {
		if !accept(t, s, fmt.Sprint("b", i)) {
			t.Fatalf("b%d: duplicate on first sight", i)
		}
	}
	if accept(t, s, "b3") {
		t.Fatal("a repeated id was accepted")
	}
	if d := s.OutboxDepth(); d != 20 {
		t.Fatalf("outbox depth %d, want 20", d)
	}

	c := openJ(t, statetest.CrashCopy(t, dir), 0)
	if d := c.OutboxDepth(); d != 20 {
		t.Fatalf("after the crash: outbox depth %d, want 20", d)
	}
	ids := outboxIDs(t, c)
	for i, id := range ids {
		if want := fmt.Sprint("evt-b", i); id != want {
			t.Fatalf("after the crash: outbox[%d] = %s, want %s (commit order)", i, id, want)
		}
	}
	for i := range 20 {
		if !seenID(t, c, fmt.Sprint("b", i)) {
			t.Fatalf("after the crash: b%d is not remembered", i)
		}
	}
	if accept(t, c, "b7") {
		t.Fatal("after the crash: a repeated id was accepted")
	}
	if ws := watchedBuilds(t, c); len(ws) != 20 || ws["b5"].Source != "webhook" {
		t.Fatalf("after the crash: %d watches (%v), want 20 from webhook", len(ws), ws["b5"])
	}
}

func TestAcknowledgedEventsAreNotPublishedAgainAfterACrash(t *testing.T) {
	dir := t.TempDir()
	s := openJ(t, dir, 0)
	acceptAck(t, s, 10, 4)
	if err := s.Checkpoint(context.Background()); err != nil {
		t.Fatal(err)
	}
	accept(t, s, "b10")

	c := openJ(t, statetest.CrashCopy(t, dir), 0)
	ids := outboxIDs(t, c)
	if len(ids) != 7 || ids[0] != "evt-b4" || ids[6] != "evt-b10" {
		t.Fatalf("after the crash the outbox holds %v, want evt-b4..evt-b10", ids)
	}
	if !seenID(t, c, "b10") || !seenID(t, c, "b0") {
		t.Fatal("after the crash: ids are forgotten")
	}
}

func TestTornJournalTailIsDroppedAndTheJournalGoesOn(t *testing.T) {
	dir := t.TempDir()
	s := openJ(t, dir, 0)
	acceptN(t, s, 5)
	cdir := statetest.CrashCopy(t, dir)
	// Tear the last record: cut the segment a few bytes short of its end.
	segs, err := journal.Segments(filepath.Join(cdir, journal.DirName))
	if err != nil || len(segs) != 1 {
		t.Fatalf("segments %v, %v", segs, err)
	}
	last, err := journal.ReplaySegment(segs[0].Path, segs[0].First, func(uint64, []byte) error { return nil })
	if err != nil || last != segs[0].First+4 {
		t.Fatalf("replay of the copy: last %d, %v", last, err)
	}
	size := journalEnd(t, segs[0])
	if err := os.Truncate(segs[0].Path, size-3); err != nil {
		t.Fatal(err)
	}

	c := openJ(t, cdir, 0)
	if ids := outboxIDs(t, c); len(ids) != 4 || ids[3] != "evt-b3" {
		t.Fatalf("after the torn write the outbox holds %v, want evt-b0..evt-b3", ids)
	}
	if seenID(t, c, "b4") {
		t.Fatal("the torn record's id is remembered")
	}
	// The sender retries the torn one; it is new, and survives another crash.
	if !accept(t, c, "b4") {
		t.Fatal("the retry of the torn webhook was taken for a duplicate")
	}
	c2 := openJ(t, statetest.CrashCopy(t, cdir), 0)
	if ids := outboxIDs(t, c2); len(ids) != 5 || ids[4] != "evt-b4" {
		t.Fatalf("after the second crash the outbox holds %v", ids)
	}
}

// publishAll acknowledges everything in the outbox, as the publisher does,
// and checkpoints.
func publishAll(t *testing.T, s *Store) {
	t.Helper()
	es, err := s.PeekOutbox(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteOutbox(context.Background(), es); err != nil {
		t.Fatal(err)
	}
	if err := s.Checkpoint(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// Open ignores a spare left short or half written (the journal's own test
// checks that it is not taken as the spare).
func TestOpenDropsAnUnfinishedSpare(t *testing.T) {
	dir := t.TempDir()
	const seg = 64 << 10
	s := openJ(t, dir, seg)
	accept(t, s, "a")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	spare := filepath.Join(dir, journal.DirName, journal.SpareName)
	for _, p := range []string{spare, spare + ".tmp"} {
		if err := os.WriteFile(p, []byte("short"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	r := openJ(t, dir, seg)
	for _, p := range []string{spare, spare + ".tmp"} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s is still there (%v)", filepath.Base(p), err)
		}
	}
	if !accept(t, r, "b") || accept(t, r, "a") {
		t.Fatal("after the restart b is a duplicate or a is new")
	}
}

// journalEnd is where the segment's last valid record ends.
func journalEnd(t *testing.T, seg journal.Segment) int64 {
	t.Helper()
	var end int64
	if _, err := journal.ReplaySegment(seg.Path, seg.First, func(_ uint64, body []byte) error {
		end += int64(journal.HeaderSize + len(body))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return end
}

// After every segment was published, checkpointed and recycled, new records
// must still get seqs above the watermarks, or a crash would take them for
// acknowledged.
func TestRecycledSegmentsAndSeqsAboveTheWatermarks(t *testing.T) {
	dir := t.TempDir()
	s := openJ(t, dir, 4096)
	n := 0
	drain := func(s *Store) { publishAll(t, s) }
	for range 3 {
		for range 100 {
			accept(t, s, fmt.Sprint("b", n))
			n++
		}
		drain(s)
	}
	s.acc.j.WaitSpare() // a spare being written would be a third file
	files, _ := os.ReadDir(filepath.Join(dir, journal.DirName))
	if len(files) > 2 {
		var names []string
		for _, f := range files {
			names = append(names, f.Name())
		}
		t.Fatalf("journal holds %v after everything was published: want the current segment and a spare", names)
	}
	var hasSpare bool
	for _, f := range files {
		hasSpare = hasSpare || f.Name() == journal.SpareName
	}
	if !hasSpare {
		t.Fatal("no segment was kept as the spare")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// A start and stop with no webhook releases the last segment too: only
	// the watermarks in bbolt remember where the seqs were.
	idle := openJ(t, dir, 4096)
	if err := idle.Close(); err != nil {
		t.Fatal(err)
	}
	if segs, _ := journal.Segments(filepath.Join(dir, journal.DirName)); len(segs) != 0 {
		t.Fatalf("segments left after everything was published: %v", segs)
	}

	s2 := openJ(t, dir, 4096)
	if d := s2.OutboxDepth(); d != 0 {
		t.Fatalf("after a clean restart the outbox holds %d, want 0", d)
	}
	for range 30 {
		accept(t, s2, fmt.Sprint("b", n))
		n++
	}
	c := openJ(t, statetest.CrashCopy(t, dir), 4096)
	if ids := outboxIDs(t, c); len(ids) != 30 || ids[0] != "evt-b300" {
		t.Fatalf("after the crash the outbox holds %d entries (%v...), want the 30 new ones", len(ids), ids[:min(len(ids), 3)])
	}
	if !seenID(t, c, "b0") || !seenID(t, c, "b329") {
		t.Fatal("ids are forgotten")
	}
}

func TestConcurrentAcceptsOfOneIDAdmitOne(t *testing.T) {
	s := openJ(t, t.TempDir(), 0)
	var admitted atomic.Int32
	var wg sync.WaitGroup
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20 {
				if accept(t, s, fmt.Sprint("same-", i)) {
					admitted.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if got := admitted.Load(); got != 20 {
		t.Fatalf("%d admitted, want 20 (one per id)", got)
	}
	if d := s.OutboxDepth(); d != 20 {
		t.Fatalf("outbox depth %d, want 20", d)
	}
}

func TestFailedAcceptLeavesNothing(t *testing.T) {
	s := openJ(t, t.TempDir(), 0)
	boom := errors.New("boom")
	err := s.Accept(context.Background(), func(tx *AcceptTx) error {
		if _, err := tx.SeenWebhook("r", "x", jNow, jNow.Add(time.Hour)); err != nil {
			return err
		}
		if err := tx.Enqueue("s", "evt-x", []byte("{}")); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("err %v, want boom", err)
	}
	if seenID(t, s, "x") || s.OutboxDepth() != 0 {
		t.Fatal("a failed Accept left its id or its event")
	}
	if !accept(t, s, "x") {
		t.Fatal("the id of a failed Accept counts as seen")
	}
}

func TestAcceptAfterCloseIsErrClosed(t *testing.T) {
	s := openJ(t, t.TempDir(), 0)
	s.Close()
	err := s.Accept(context.Background(), func(*AcceptTx) error { return nil })
	if !errors.Is(err, ErrClosed) {
		t.Fatalf("err %v, want ErrClosed", err)
	}
}

// A failed fdatasync refuses its batch, the duplicates in it of ids the
// batch recorded included, and every later one until a restart, which
// replays what reached the disk.
func TestFailedSyncRefusesTheBatchAndItsDuplicates(t *testing.T) {
	dir := t.TempDir()
	boom := errors.New("EIO")
	var failSync atomic.Bool
	s, err := Open(Options{Dir: dir, LockTimeout: 100 * time.Millisecond, CheckpointEvery: time.Hour,
		journalSync: func(f *os.File) error {
			if failSync.Load() {
				return boom
			}
			return f.Sync()
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	accept(t, s, "before")
	// A poller event in bbolt's outbox, too.
	if err := s.Update(context.Background(), func(tx *Tx) error { return tx.Enqueue("s", "evt-poller", nil) }); err != nil {
		t.Fatal(err)
	}
	// Hold the loop so that the next two Accepts share one batch.
	hold, held := make(chan struct{}), make(chan struct{})
	go s.Accept(context.Background(), func(*AcceptTx) error {
		close(held)
		<-hold
		return nil
	})
	<-held
	failSync.Store(true)
	errs := make(chan error, 2)
	for range 2 {
		go func() {
			errs <- s.Accept(context.Background(), func(tx *AcceptTx) error {
				seen, err := tx.SeenWebhook("r", "x", jNow, jNow.Add(time.Hour))
				if err != nil || seen {
					return err
				}
				return tx.Enqueue("s", "evt-x", []byte("{}"))
			})
		}()
	}
	for len(s.acc.reqs) < 2 {
		time.Sleep(time.Millisecond)
	}
	close(hold)
	for range 2 {
		if err := <-errs; !errors.Is(err, boom) {
			t.Fatalf("Accept in the failed batch: %v, want the sync error (a duplicate must not be acknowledged before its original is durable)", err)
		}
	}
	if err := s.Ready(); err == nil || !errors.Is(err, boom) {
		t.Fatalf("Ready after a failed sync: %v", err)
	}
	if err := s.Accept(context.Background(), func(tx *AcceptTx) error { return tx.Enqueue("s", "y", nil) }); !errors.Is(err, boom) {
		t.Fatalf("Accept after a failed sync: %v, want refused", err)
	}
	if seenID(t, s, "x") {
		t.Fatal("the refused id counts as seen")
	}
	// The publisher still drains what was accepted before.
	if ids := outboxIDs(t, s); len(ids) != 2 || ids[0] != "evt-poller" || ids[1] != "evt-before" {
		t.Fatalf("after a failed sync the outbox holds %v, want evt-poller and evt-before", ids)
	}
	if err := s.Close(); err != nil && !errors.Is(err, boom) {
		t.Fatal(err)
	}
	// The write itself reached the file (only the sync "failed"): the
	// restart publishes it, and goes on past it.
	r := openJ(t, dir, 0)
	if ids := outboxIDs(t, r); len(ids) != 3 || ids[2] != "evt-x" {
		t.Fatalf("after the restart the outbox holds %v", ids)
	}
	if !accept(t, r, "after") {
		t.Fatal("a new id after the restart is a duplicate")
	}
	c := openJ(t, statetest.CrashCopy(t, dir), 0)
	if ids := outboxIDs(t, c); len(ids) != 4 || ids[3] != "evt-after" {
		t.Fatalf("after a crash the outbox holds %v", ids)
	}
}
