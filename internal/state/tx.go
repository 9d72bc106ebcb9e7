package state

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/cakework-relay/cakework-relay/internal/event"
)

var (
	bMeta          = []byte("meta")
	bOutbox        = []byte("outbox")
	bResources     = []byte("resources")
	bCursors       = []byte("cursors")
	bWatches       = []byte("watches")
	bWebhookIDs    = []byte("webhook_ids") // schema 1 only; dropped by schema 2
	bWebhookExpiry = []byte("webhook_expiry")
	bSinks         = []byte("sinks")
)

// Tx is a transaction with typed accessors. Keys are "<kind>/<id>" so one
// bucket holds every kind and ForEach can scan one kind by prefix.
type Tx struct {
	tx          *bolt.Tx
	outboxAdded int64
	// seen is the store's in-memory index of webhook ids (nil in Open's
	// replay); seenCh is what this transaction changed in it (expired ids),
	// merged after the commit. Webhook ids are recorded only by Accept.
	seen   *seenIndex
	seenCh seenChanges
}

// Enqueue adds an event to the outbox. It is published after this
// transaction commits, in commit order.
func (t *Tx) Enqueue(subject, msgID string, payload []byte) error {
	b := t.tx.Bucket(bOutbox)
	seq, err := b.NextSequence()
	if err != nil {
		return err
	}
	if err := b.Put(u64(seq), encodeOutbox(subject, msgID, payload)); err != nil {
		return err
	}
	t.outboxAdded++
	return nil
}

func key(kind, id string) []byte { return []byte(kind + "/" + id) }

func getJSON(b *bolt.Bucket, k []byte, v any) (bool, error) {
	raw := b.Get(k)
	if raw == nil {
		return false, nil
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return true, fmt.Errorf("state %s %s: %w", b, k, err)
	}
	return true, nil
}

func putJSON(b *bolt.Bucket, k []byte, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(k, raw)
}

func forEach(b *bolt.Bucket, kind string, fn func(id string, raw []byte) error) error {
	prefix := []byte(kind + "/")
	c := b.Cursor()
	for k, v := c.Seek(prefix); k != nil && len(k) >= len(prefix) && string(k[:len(prefix)]) == string(prefix); k, v = c.Next() {
		if err := fn(string(k[len(prefix):]), v); err != nil {
			return err
		}
	}
	return nil
}

// Resource state last seen for a build or VM (whatever the poller keeps).

func (t *Tx) GetResource(kind, id string, v any) (bool, error) {
	return getJSON(t.tx.Bucket(bResources), key(kind, id), v)
}
func (t *Tx) PutResource(kind, id string, v any) error {
	return putJSON(t.tx.Bucket(bResources), key(kind, id), v)
}
func (t *Tx) DeleteResource(kind, id string) error {
	return t.tx.Bucket(bResources).Delete(key(kind, id))
}
func (t *Tx) ForEachResource(kind string, fn func(id string, raw []byte) error) error {
	return forEach(t.tx.Bucket(bResources), kind, fn)
}

// Log cursors, one per log stream ("build/<id>", "vm/<id>", ...).

func (t *Tx) GetCursor(kind, id string, v any) (bool, error) {
	return getJSON(t.tx.Bucket(bCursors), key(kind, id), v)
}
func (t *Tx) PutCursor(kind, id string, v any) error {
	return putJSON(t.tx.Bucket(bCursors), key(kind, id), v)
}
func (t *Tx) DeleteCursor(kind, id string) error {
	return t.tx.Bucket(bCursors).Delete(key(kind, id))
}
func (t *Tx) ForEachCursor(kind string, fn func(id string, raw []byte) error) error {
	return forEach(t.tx.Bucket(bCursors), kind, fn)
}

// Watch is a build (or function build) the poller follows.
type Watch struct {
	// Source says who asked: config, admin, nats, webhook.
	Source  string    `json:"source"`
	AddedAt time.Time `json:"addedAt"`
}

func (t *Tx) PutWatch(kind, id string, w Watch) error {
	return putJSON(t.tx.Bucket(bWatches), key(kind, id), w)
}

// DeleteWatch removes a watch and reports whether it existed.
func (t *Tx) DeleteWatch(kind, id string) (bool, error) {
	b := t.tx.Bucket(bWatches)
	k := key(kind, id)
	if b.Get(k) == nil {
		return false, nil
	}
	return true, b.Delete(k)
}

func (t *Tx) GetWatch(kind, id string) (Watch, bool, error) {
	var w Watch
	ok, err := getJSON(t.tx.Bucket(bWatches), key(kind, id), &w)
	return w, ok, err
}

// Watches lists the ids watched for kind, in key order.
func (t *Tx) Watches(kind string) (map[string]Watch, error) {
	out := map[string]Watch{}
	err := forEach(t.tx.Bucket(bWatches), kind, func(id string, raw []byte) error {
		var w Watch
		if err := json.Unmarshal(raw, &w); err != nil {
			return fmt.Errorf("watch %s/%s: %w", kind, id, err)
		}
		out[id] = w
		return nil
	})
	return out, err
}

// WatchEntry is one watch of a page (WatchesPage).
type WatchEntry struct {
	ID string
	Watch
}

// WatchesPage lists up to limit watches of kind whose ids sort after
// after ("" for the first page), in id order: a tick reads the watch list
// a bounded page at a time.
func (t *Tx) WatchesPage(kind, after string, limit int) ([]WatchEntry, error) {
	prefix := []byte(kind + "/")
	c := t.tx.Bucket(bWatches).Cursor()
	k, v := c.Seek(key(kind, after))
	if after != "" && k != nil && string(k) == kind+"/"+after {
		k, v = c.Next()
	}
	var out []WatchEntry
	for ; k != nil && len(out) < limit && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		e := WatchEntry{ID: string(k[len(prefix):])}
		if err := json.Unmarshal(v, &e.Watch); err != nil {
			return out, fmt.Errorf("watch %s: %w", k, err)
		}
		out = append(out, e)
	}
	return out, nil
}

// WatchCount is how many watches of kind there are. It walks the keys
// (no decoding): the watch list is capped, so this is bounded.
func (t *Tx) WatchCount(kind string) (int, error) {
	return countPrefix(t.tx.Bucket(bWatches), kind), nil
}

func countPrefix(b *bolt.Bucket, kind string) int {
	prefix := []byte(kind + "/")
	n := 0
	c := b.Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		n++
	}
	return n
}

// Sink bookkeeping: small per-sink records (Slack thread ts, idle clocks...).

func (t *Tx) GetSink(sink, k string, v any) (bool, error) {
	return getJSON(t.tx.Bucket(bSinks), key(sink, k), v)
}
func (t *Tx) PutSink(sink, k string, v any) error {
	return putJSON(t.tx.Bucket(bSinks), key(sink, k), v)
}
func (t *Tx) DeleteSink(sink, k string) error {
	return t.tx.Bucket(bSinks).Delete(key(sink, k))
}
func (t *Tx) ForEachSink(sink string, fn func(k string, raw []byte) error) error {
	return forEach(t.tx.Bucket(bSinks), sink, fn)
}

// Meta holds small relay-wide facts (the VM baseline, the schema version).

func (t *Tx) GetMeta(k string, v any) (bool, error) {
	return getJSON(t.tx.Bucket(bMeta), []byte(k), v)
}
func (t *Tx) PutMeta(k string, v any) error {
	return putJSON(t.tx.Bucket(bMeta), []byte(k), v)
}

// EnqueueEvent adds a CloudEvent to the outbox under its subject, with its
// id as the Nats-Msg-Id.
func (t *Tx) EnqueueEvent(prefix string, e event.Event) error {
	payload, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("encode event %s: %w", e.ID, err)
	}
	return t.Enqueue(e.NATSSubject(prefix), e.ID, payload)
}
