package state

import (
	"crypto/sha256"
	"encoding/binary"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Seen webhook ids.
//
// The durable record of a delivery id is one entry in the time-ordered
// expiry index (bucket webhook_expiry, key = expiry as 8 bytes big-endian,
// then "<receiver>/<id>", empty value). New keys land at the end of that
// bucket, next to each other, so remembering an id costs no random B+tree
// leaf. Lookups go to an in-memory index: a map from a 128-bit hash of
// "<receiver>/<id>" to its expiry, rebuilt from the expiry index at Open and
// pruned by ExpireWebhookIDs. It holds about 40 bytes per remembered id, and
// is bounded by seen_ttl like the bucket.
//
// The index changes only after a commit succeeded: a transaction records
// what it adds or expires in its own pending set (which later functions of
// the same batch consult), and the commit loop merges that set once bbolt's
// commit returned nil. A batch that is rolled back and retried starts from a
// fresh Tx, so a failed function leaves no id behind.

// seenHash is a 128-bit hash of "<receiver>/<id>" (truncated SHA-256: no
// collision in practice, and none a sender can craft).
type seenHash [16]byte

func hashSeen(k []byte) seenHash {
	sum := sha256.Sum256(k)
	var h seenHash
	copy(h[:], sum[:16])
	return h
}

// expiryKey is an id's key in the expiry index: the expiry (unix
// nanoseconds, big-endian) then "<receiver>/<id>".
func expiryKey(exp int64, k []byte) []byte {
	ik := make([]byte, 8+len(k))
	binary.BigEndian.PutUint64(ik, uint64(exp))
	copy(ik[8:], k)
	return ik
}

// seenIndex maps a remembered id to its expiry (unix nanoseconds).
type seenIndex struct {
	mu  sync.RWMutex
	exp map[seenHash]int64
}

func (x *seenIndex) get(h seenHash) (int64, bool) {
	x.mu.RLock()
	e, ok := x.exp[h]
	x.mu.RUnlock()
	return e, ok
}

// load rebuilds the index from the expiry index. An id may have several
// entries there (it was seen again after it expired, before the expired
// entry was pruned); the latest expiry wins.
func (x *seenIndex) load(btx *bolt.Tx) error {
	m := map[seenHash]int64{}
	err := btx.Bucket(bWebhookExpiry).ForEach(func(k, _ []byte) error {
		if len(k) < 8 {
			return nil
		}
		h, e := hashSeen(k[8:]), int64(bin64(k[:8]))
		if old, ok := m[h]; !ok || e > old {
			m[h] = e
		}
		return nil
	})
	if err != nil {
		return err
	}
	x.mu.Lock()
	x.exp = m
	x.mu.Unlock()
	return nil
}

// seenChanges is what one transaction did to the seen ids, merged into the
// index after its commit.
type seenChanges struct {
	add map[seenHash]int64
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
		}
	}
	for h, e := range c.add {
		if old, ok := x.exp[h]; !ok || e > old {
			x.exp[h] = e
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

// Build changes that came by webhook are remembered by event id, under the
// Cakework receiver, for seen_ttl. Ingest marks them; the poller checks them
// so it does not announce a change again after JetStream's duplicate window.
const (
	changeReceiver = "cakework"
	changePrefix   = "e:"
)

// MarkChangeAnnounced remembers that the change with this event id was
// announced, until expires.
func (t *Tx) MarkChangeAnnounced(eventID string, now, expires time.Time) error {
	_, err := t.SeenWebhook(changeReceiver, changePrefix+eventID, now, expires)
	return err
}

// ChangeAnnounced reports whether the change with this event id was
// announced by webhook and is still remembered.
func (t *Tx) ChangeAnnounced(eventID string, now time.Time) bool {
	return t.HasWebhook(changeReceiver, changePrefix+eventID, now)
}
