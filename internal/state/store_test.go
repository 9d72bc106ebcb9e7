package state

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

func open(t *testing.T, dir string) *Store {
	t.Helper()
	s, err := Open(Options{Dir: dir, LockTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestSecondOpenFailsAndNamesTheLock(t *testing.T) {
	dir := t.TempDir()
	open(t, dir)
	start := time.Now()
	_, err := Open(Options{Dir: dir, LockTimeout: 100 * time.Millisecond})
	if err == nil {
		t.Fatal("second open succeeded")
	}
	if !strings.Contains(err.Error(), "locked by another process") || !strings.Contains(err.Error(), FileName) {
		t.Fatalf("error does not name the lock: %v", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatal("second open waited too long")
	}
}

func TestConcurrentUpdatesCommitAndOutboxKeepsOrder(t *testing.T) {
	s := open(t, t.TempDir())
	ctx := context.Background()
	const writers, each = 32, 50
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < each; i++ {
				err := s.Update(ctx, func(tx *Tx) error {
					if err := tx.PutResource("vm", fmt.Sprintf("w%d", w), i); err != nil {
						return err
					}
					return tx.Enqueue("s", fmt.Sprintf("w%d-%d", w, i), []byte("x"))
				})
				if err != nil {
					t.Error(err)
					return
				}
			}
		}(w)
	}
	wg.Wait()
	if got := s.OutboxDepth(); got != writers*each {
		t.Fatalf("depth %d, want %d", got, writers*each)
	}
	entries, err := s.PeekOutbox(writers * each)
	if err != nil {
		t.Fatal(err)
	}
	// Within one writer, outbox order is the order of its Updates.
	last := map[string]int{}
	for i, e := range entries {
		if i > 0 && e.Seq <= entries[i-1].Seq {
			t.Fatal("sequence not increasing")
		}
		var w, n int
		fmt.Sscanf(e.MsgID, "w%d-%d", &w, &n)
		k := fmt.Sprint(w)
		if prev, ok := last[k]; ok && n != prev+1 {
			t.Fatalf("writer %d: %d after %d", w, n, prev)
		}
		last[k] = n
	}
	if err := s.DeleteOutbox(ctx, entries[:10]); err != nil {
		t.Fatal(err)
	}
	if got := s.OutboxDepth(); got != writers*each-10 {
		t.Fatalf("depth after delete %d", got)
	}
}

func TestFailedUpdateIsRolledBackAlone(t *testing.T) {
	s := open(t, t.TempDir())
	ctx := context.Background()
	boom := errors.New("boom")
	var wg sync.WaitGroup
	results := make([]error, 20)
	for i := range results {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			results[i] = s.Update(ctx, func(tx *Tx) error {
				if err := tx.Enqueue("s", fmt.Sprint(i), nil); err != nil {
					return err
				}
				if i%5 == 0 {
					return boom
				}
				return nil
			})
		}(i)
	}
	wg.Wait()
	for i, err := range results {
		if (i%5 == 0) != errors.Is(err, boom) {
			t.Errorf("update %d: %v", i, err)
		}
	}
	entries, _ := s.PeekOutbox(100)
	if len(entries) != 16 || s.OutboxDepth() != 16 {
		t.Fatalf("%d entries, depth %d, want 16", len(entries), s.OutboxDepth())
	}
	for _, e := range entries {
		var i int
		fmt.Sscan(e.MsgID, &i)
		if i%5 == 0 {
			t.Fatalf("failed update %d left an outbox entry", i)
		}
	}
}

func TestStateSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	ctx := context.Background()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	err := s.Update(ctx, func(tx *Tx) error {
		if err := tx.PutWatch("build", "b1", Watch{Source: "admin", AddedAt: now}); err != nil {
			return err
		}
		if err := tx.PutCursor("vm", "v1", map[string]int{"ts": 5}); err != nil {
			return err
		}
		if err := tx.PutSink("slack-a", "build/b1", "123.456"); err != nil {
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	err = s.Accept(ctx, func(tx *AcceptTx) error {
		dup, err := tx.SeenWebhook("cakework", "msg_1", now, now.Add(time.Hour))
		if dup {
			t.Error("first sighting reported as duplicate")
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = open(t, dir)
	err = s.View(func(tx *Tx) error {
		w, ok, err := tx.GetWatch("build", "b1")
		if !ok || err != nil || w.Source != "admin" {
			t.Errorf("watch lost: %v %v %v", w, ok, err)
		}
		var c map[string]int
		if ok, _ := tx.GetCursor("vm", "v1", &c); !ok || c["ts"] != 5 {
			t.Errorf("cursor lost: %v", c)
		}
		var ts string
		if ok, _ := tx.GetSink("slack-a", "build/b1", &ts); !ok || ts != "123.456" {
			t.Errorf("sink record lost")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !has(s, "cakework", "msg_1", now) {
		t.Error("webhook id lost")
	}
	if has(s, "cakework", "msg_1", now.Add(2*time.Hour)) {
		t.Error("expired webhook id still counts")
	}
}

func TestWebhookIDsExpire(t *testing.T) {
	s := open(t, t.TempDir())
	ctx := context.Background()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := 0; i < 100; i++ {
		seen(t, s, "r", fmt.Sprint(i), now, now.Add(time.Duration(i)*time.Minute))
	}
	// Expiry reads bbolt, where the checkpoint (every 100ms) puts ids.
	if err := s.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	n, err := s.ExpireWebhookIDs(ctx, now.Add(50*time.Minute), 1000)
	if err != nil || n != 50 {
		t.Fatalf("expired %d, %v; want 50", n, err)
	}
	if has(s, "r", "10", now) {
		t.Error("expired id still present")
	}
	if !has(s, "r", "60", now) {
		t.Error("live id removed")
	}
}

func TestClosedStoreRefuses(t *testing.T) {
	s := open(t, t.TempDir())
	s.Close()
	if err := s.Update(context.Background(), func(*Tx) error { return nil }); !errors.Is(err, ErrClosed) {
		t.Fatalf("got %v", err)
	}
	if s.Ready() == nil {
		t.Fatal("closed store ready")
	}
	if err := s.Close(); err != nil {
		t.Fatal("second close:", err)
	}
}

func BenchmarkGroupCommit64(b *testing.B) {
	s, err := Open(Options{Dir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	b.SetParallelism(32) // 2 cores x 32 = 64 writers
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			i++
			s.Update(ctx, func(tx *Tx) error { return tx.Enqueue("s", "id", make([]byte, 300)) })
		}
	})
}
