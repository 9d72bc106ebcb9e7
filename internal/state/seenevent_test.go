package state

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/state/statetest"
)

// acceptEvent journals a delivery as ingest does for Cakework builds: a
// repeat of its id is answered with the event recorded for the first.
func acceptEvent(t *testing.T, s *Store, id, eventID string) (first string, dup bool) {
	t.Helper()
	err := s.Accept(context.Background(), func(tx *AcceptTx) error {
		first, dup = "", false
		if ev, seen := tx.WebhookEvent("r", id, jNow); seen {
			first, dup = ev, true
			return nil
		}
		if _, err := tx.SeenWebhookEvent("r", id, eventID, jNow, jNow.Add(time.Hour)); err != nil {
			return err
		}
		return tx.Enqueue("cakework.build."+id+".succeeded", eventID, []byte(`{}`))
	})
	if err != nil {
		t.Fatal(err)
	}
	return first, dup
}

func webhookEvent(s *Store, id string, now time.Time) (ev string, seen bool) {
	s.Accept(context.Background(), func(tx *AcceptTx) error {
		ev, seen = tx.WebhookEvent("r", id, now)
		return nil
	})
	return ev, seen
}

const (
	evA = "0123456789abcdef0123456789abcdef"
	evB = "fedcba9876543210fedcba9876543210"
)

// The event recorded with a delivery id is what its repeats get: in
// memory, after a crash (journal replay), after a checkpoint and a clean
// restart; an id recorded without one, or with an id that is not an
// event id, is seen with no event; an expired id has neither.
func TestWebhookEventIsKeptWithTheSeenID(t *testing.T) {
	dir := t.TempDir()
	s := openJ(t, dir, 0)
	if _, dup := acceptEvent(t, s, "d1", evA); dup {
		t.Fatal("d1: duplicate on first sight")
	}
	if first, dup := acceptEvent(t, s, "d1", evB); !dup || first != evA {
		t.Fatalf("repeat of d1: dup %v, event %q; want the first's %s", dup, first, evA)
	}
	accept(t, s, "d0") // recorded without an event, as before events were kept
	acceptEvent(t, s, "d2", "not-an-event-id")
	// Within one function: what it just recorded.
	s.Accept(context.Background(), func(tx *AcceptTx) error {
		tx.SeenWebhookEvent("r", "d3", evB, jNow, jNow.Add(time.Hour))
		if ev, seen := tx.WebhookEvent("r", "d3", jNow); !seen || ev != evB {
			t.Errorf("d3 in its own function: %q %v", ev, seen)
		}
		return nil
	})

	check := func(when string, s *Store) {
		t.Helper()
		for _, tc := range []struct {
			id, ev string
			seen   bool
		}{{"d1", evA, true}, {"d0", "", true}, {"d2", "", true}, {"d3", evB, true}, {"d9", "", false}} {
			if ev, seen := webhookEvent(s, tc.id, jNow); ev != tc.ev || seen != tc.seen {
				t.Errorf("%s: %s gives %q %v, want %q %v", when, tc.id, ev, seen, tc.ev, tc.seen)
			}
		}
	}
	check("in memory", s)
	c := openJ(t, statetest.CrashCopy(t, dir), 0)
	check("after a crash before any checkpoint", c)
	if err := s.Checkpoint(context.Background()); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = openJ(t, dir, 0)
	check("after a checkpoint and a restart", s)

	if ev, seen := webhookEvent(s, "d1", jNow.Add(time.Hour)); seen || ev != "" {
		t.Fatalf("expired d1: %q %v", ev, seen)
	}
	if _, err := s.ExpireWebhookIDs(context.Background(), jNow.Add(2*time.Hour), 100); err != nil {
		t.Fatal(err)
	}
	if n := s.WebhookIDCount(); n != 0 || len(s.seen.ev) != 0 {
		t.Fatalf("after expiry: %d ids, %d events remembered", n, len(s.seen.ev))
	}
	// Seen again later, without an event: the old event is not its.
	accept(t, s, "d1")
	if ev, seen := webhookEvent(s, "d1", jNow); !seen || ev != "" {
		t.Fatalf("d1 recorded again without an event: %q %v", ev, seen)
	}
}

// Concurrent first deliveries of one id, in shared batches: one is
// admitted, and every other is told the admitted one's event.
func TestConcurrentRepeatsGetTheAdmittedEvent(t *testing.T) {
	s := openJ(t, t.TempDir(), 0)
	var mu sync.Mutex
	admitted := map[string]string{} // delivery id -> event
	answers := map[string][]string{}
	var wg sync.WaitGroup
	for g := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 10 {
				id := fmt.Sprint("same-", i)
				ev := fmt.Sprintf("%032x", g*100+i+1)
				first, dup := acceptEvent(t, s, id, ev)
				mu.Lock()
				if dup {
					answers[id] = append(answers[id], first)
				} else if prev, ok := admitted[id]; ok {
					t.Errorf("%s admitted twice: %s and %s", id, prev, ev)
				} else {
					admitted[id] = ev
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	for i := range 10 {
		id := fmt.Sprint("same-", i)
		if len(answers[id]) != 31 {
			t.Fatalf("%s: %d duplicates, want 31", id, len(answers[id]))
		}
		for _, got := range answers[id] {
			if got != admitted[id] {
				t.Fatalf("%s: a duplicate was told %s, the admitted event is %s", id, got, admitted[id])
			}
		}
	}
}
