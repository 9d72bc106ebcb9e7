package state

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"
)

func TestWatchQueueAppliesInOrderKeepingExisting(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	ctx := context.Background()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if err := s.Update(ctx, func(tx *Tx) error {
		return tx.PutWatch(KindBuild, "b1", Watch{Source: "admin", AddedAt: t0})
	}); err != nil {
		t.Fatal(err)
	}
	for i, id := range []string{"b1", "b2", "b2", "b3"} {
		raw, err := EncodeQueuedWatch(KindBuild, id, Watch{Source: "webhook", AddedAt: t0.Add(time.Duration(i) * time.Second)})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Accept(ctx, func(tx *AcceptTx) error { return tx.QueueWatch(raw) }); err != nil {
			t.Fatal(err)
		}
	}
	// A restart in between loses nothing: the queue is on disk.
	s.Close()
	s = open(t, dir)
	n, err := s.ApplyWatchQueue(ctx)
	if err != nil || n != 2 {
		t.Fatalf("applied %d, %v; want 2 new watches", n, err)
	}
	s.View(func(tx *Tx) error {
		ws, _ := tx.Watches(KindBuild)
		if len(ws) != 3 || ws["b1"].Source != "admin" || !ws["b2"].AddedAt.Equal(t0.Add(time.Second)) {
			t.Errorf("watches %+v", ws)
		}
		return nil
	})
	if n, _ := s.ApplyWatchQueue(ctx); n != 0 {
		t.Fatalf("queue not emptied: %d applied again", n)
	}
}

func TestWatchQueueLargerThanAChunk(t *testing.T) {
	s := open(t, t.TempDir())
	ctx := context.Background()
	const total = 12000
	if err := s.Accept(ctx, func(tx *AcceptTx) error {
		for i := 0; i < total; i++ {
			raw, _ := EncodeQueuedWatch(KindBuild, fmt.Sprint("b", i), Watch{Source: "webhook"})
			if err := tx.QueueWatch(raw); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	n, err := s.ApplyWatchQueue(ctx)
	if err != nil || n != total {
		t.Fatalf("applied %d, %v; want %d", n, err, total)
	}
}

func TestEncodeQueuedWatchMatchesJSONMarshal(t *testing.T) {
	at := time.Date(2026, 3, 4, 5, 6, 7, 891000000, time.FixedZone("x", 3600))
	for _, c := range []struct {
		kind, id string
		w        Watch
	}{
		{KindBuild, "b1", Watch{Source: "webhook", AddedAt: at}},
		{KindVM, "vm-2_x", Watch{Source: "config", AddedAt: at.UTC().Truncate(time.Second)}},
		{KindBuild, `needs "escaping" <&> \ é ` + "\x01\u2028\xff", Watch{Source: "admin"}},
	} {
		want, err := json.Marshal(queuedWatch{Kind: c.kind, ID: c.id, Watch: c.w})
		if err != nil {
			t.Fatal(err)
		}
		got, err := EncodeQueuedWatch(c.kind, c.id, c.w)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("EncodeQueuedWatch (%v)\n got %s\nwant %s", err, got, want)
		}
	}
	if _, err := EncodeQueuedWatch(KindBuild, "b", Watch{AddedAt: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}); err == nil {
		t.Fatal("year 10000 encoded; json.Marshal refuses it")
	}
}
