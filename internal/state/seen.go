package state

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"hash/maphash"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Seen webhook ids.
//
// The durable record of a delivery id is one entry in the time-ordered
// expiry index (bucket webhook_expiry, key = expiry as 8 bytes big-endian,
// then "<receiver>/<id>"; value empty, or the 16 bytes of the event id
// published for that delivery when it was recorded with SeenWebhookEvent).
// New keys land at the end of that bucket, next to each other, so
// remembering an id costs no random B+tree leaf. Lookups go to an in-memory
// index: a map from a 64-bit keyed hash (seenHash) of
// "<receiver>/<id>" to its expiry, rebuilt from the expiry index at Open and
// pruned by ExpireWebhookIDs. It holds about 30 bytes per remembered id
// (about 70 for one kept with its event; measured with bench/sizing), and
// is bounded by seen_ttl like the bucket.
//
// Ids are recorded only through Accept (accept.go): the index changes once
// the journal batch is durable, and a function that fails leaves no id
// behind. Expiring and trimming go through Updates: a transaction records
// what it deletes in its own pending set, and the commit loop merges that
// set once bbolt's commit returned nil. The index has its own lock.

// seenHash is a 64-bit keyed hash of "<receiver>/<id>": maphash with a
// seed drawn when the process starts, so a sender cannot craft a
// collision (the seed never leaves the process; the index is rebuilt from
// bbolt's full keys at every Open). By chance, a new id matches one of N
// remembered ids with probability N/2^64: 1.6e-14 at 300,000. It was a
// truncated SHA-256 of 16 bytes; 8 take a third less memory per id, and
// hashing costs less on the webhook path.
type seenHash uint64

// seenSeed keys hashSeen for this process.
var seenSeed = maphash.MakeSeed()

func hashSeen(k []byte) seenHash {
	return seenHash(maphash.Bytes(seenSeed, k))
}

// expiryKey is an id's key in the expiry index: the expiry (unix
// nanoseconds, big-endian) then "<receiver>/<id>".
func expiryKey(exp int64, k []byte) []byte {
	ik := make([]byte, 8+len(k))
	binary.BigEndian.PutUint64(ik, uint64(exp))
	copy(ik[8:], k)
	return ik
}

// eventRef is an event id (event.ID: 32 hex digits) kept with a seen id as
// its 16 bytes, so that a repeated delivery is answered with the id of the
// event published for the first one. The zero value is no event: an entry
// recorded without one (SeenWebhook, or before entries carried it).
type eventRef [16]byte

// refOf is eventID's ref, or the zero ref when it is not 32 hex digits.
func refOf(eventID string) eventRef {
	var r eventRef
	if len(eventID) != 2*len(r) {
		return eventRef{}
	}
	if _, err := hex.Decode(r[:], []byte(eventID)); err != nil {
		return eventRef{}
	}
	return r
}

// String is the event id, or "" for none.
func (r eventRef) String() string {
	if r == (eventRef{}) {
		return ""
	}
	return hex.EncodeToString(r[:])
}

// refFromValue reads an expiry index value: 16 bytes, or anything else
// (empty) for no event.
func refFromValue(v []byte) eventRef {
	var r eventRef
	if len(v) == len(r) {
		copy(r[:], v)
	}
	return r
}

// seenIndex maps a remembered id to its expiry (unix nanoseconds), and the
// few ids recorded with an event (SeenWebhookEvent) to that event. ev is
// kept apart so ids without one cost nothing more.
type seenIndex struct {
	mu  sync.RWMutex
	exp map[seenHash]int64
	ev  map[seenHash]eventRef
}

func (x *seenIndex) get(h seenHash) (int64, bool) {
	x.mu.RLock()
	e, ok := x.exp[h]
	x.mu.RUnlock()
	return e, ok
}

// event is the event recorded with an id's latest entry, if any.
func (x *seenIndex) event(h seenHash) eventRef {
	x.mu.RLock()
	r := x.ev[h]
	x.mu.RUnlock()
	return r
}

// setEvent records r as h's event (or forgets it, for none). Call with
// x.mu held for writing, for an entry that just became h's latest.
func (x *seenIndex) setEvent(h seenHash, r eventRef) {
	switch {
	case r != eventRef{}:
		if x.ev == nil {
			x.ev = map[seenHash]eventRef{}
		}
		x.ev[h] = r
	case x.ev != nil:
		delete(x.ev, h)
	}
}

// load rebuilds the index from the expiry index. An id may have several
// entries there (it was seen again after it expired, before the expired
// entry was pruned); the latest expiry wins.
func (x *seenIndex) load(btx *bolt.Tx) error {
	m := map[seenHash]int64{}
	ev := map[seenHash]eventRef{}
	err := btx.Bucket(bWebhookExpiry).ForEach(func(k, v []byte) error {
		if len(k) < 8 {
			return nil
		}
		h, e := hashSeen(k[8:]), int64(bin64(k[:8]))
		if old, ok := m[h]; !ok || e > old {
			m[h] = e
			if r := refFromValue(v); r != (eventRef{}) {
				ev[h] = r
			} else {
				delete(ev, h)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	x.mu.Lock()
	x.exp, x.ev = m, ev
	x.mu.Unlock()
	return nil
}

// seenChanges is what one transaction did to the seen ids, merged into the
// index after its commit.
type seenChanges struct {
	add map[seenHash]int64
	// ev holds the events of the ids in add recorded with one.
	ev map[seenHash]eventRef
	// del lists expiry index entries deleted by ExpireWebhookIDs: the id is
	// dropped from the index only if that entry was its latest expiry.
	del []seenDel
}

type seenDel struct {
	h   seenHash
	exp int64
}

// apply merges a committed transaction's changes. Called by the commit loop
// only.
func (x *seenIndex) apply(c *seenChanges) {
	if len(c.add) == 0 && len(c.del) == 0 {
		return
	}
	x.mu.Lock()
	for _, d := range c.del {
		if e, ok := x.exp[d.h]; ok && e <= d.exp {
			delete(x.exp, d.h)
			x.setEvent(d.h, eventRef{})
		}
	}
	for h, e := range c.add {
		if old, ok := x.exp[h]; !ok || e > old {
			x.exp[h] = e
			x.setEvent(h, c.ev[h])
		}
	}
	x.mu.Unlock()
}

// len is the number of remembered ids.
func (x *seenIndex) len() int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return len(x.exp)
}

// ExpireWebhookIDs deletes remembered webhook ids whose expiry is before
// now, at most max per call, and reports how many went.
func (s *Store) ExpireWebhookIDs(ctx context.Context, now time.Time, max int) (int, error) {
	return s.dropOldestSeen(ctx, u64(uint64(now.UnixNano())), max)
}

// WebhookIDCount is how many webhook ids are remembered.
func (s *Store) WebhookIDCount() int { return s.seen.len() }

// TrimWebhookIDs forgets the ids closest to their expiry until at most keep
// are remembered (at most max per call), and reports how many went. It
// bounds memory (about 36 to 80 bytes per id) when ids arrive faster than
// seen_ttl lets them expire.
func (s *Store) TrimWebhookIDs(ctx context.Context, keep, max int) (int, error) {
	over := s.WebhookIDCount() - keep
	if over <= 0 {
		return 0, nil
	}
	return s.dropOldestSeen(ctx, nil, min(over, max))
}

// dropOldestSeen deletes up to max entries from the front of the expiry
// index, stopping at the first one at or after limit (nil: no limit).
func (s *Store) dropOldestSeen(ctx context.Context, limit []byte, max int) (int, error) {
	n := 0
	err := s.Update(ctx, func(tx *Tx) error {
		n = 0
		idx := tx.tx.Bucket(bWebhookExpiry)
		c := idx.Cursor()
		var keys [][]byte
		for k, _ := c.First(); k != nil && len(keys) < max; k, _ = c.Next() {
			if limit != nil && string(k[:8]) >= string(limit) {
				break
			}
			keys = append(keys, append([]byte(nil), k...))
		}
		for _, k := range keys {
			if err := idx.Delete(k); err != nil {
				return err
			}
			// The index drops the id after the commit, unless a later
			// expiry is remembered for it.
			tx.seenCh.del = append(tx.seenCh.del, seenDel{h: hashSeen(k[8:]), exp: int64(bin64(k[:8]))})
			n++
		}
		return nil
	})
	return n, err
}

// Build changes that came by webhook are remembered by event id, under the
// Cakework receiver, for seen_ttl. Ingest marks them; the poller checks them
// so it does not announce a change again after JetStream's duplicate window.
const (
	changeReceiver = "cakework"
	changePrefix   = "e:"
)

// ChangeAnnounced reports whether the change with this event id was
// announced by webhook and is still remembered (the poller's check;
// ingest's is AcceptTx.ChangeAnnounced).
func (t *Tx) ChangeAnnounced(eventID string, now time.Time) bool {
	if t.seen == nil {
		return false
	}
	e, _ := t.seen.get(hashSeen(key(changeReceiver, changePrefix+eventID)))
	return e > now.UnixNano()
}
