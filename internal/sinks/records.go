package sinks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cakework-relay/cakework-relay/internal/state"
)

// Records is where sinks keep their small records (attempt counts,
// Slack's thread parents, log tails and flood windows): the state store
// for a single relay (BoltRecords), the fleet's sinks bucket for a fleet
// member (KVRecords), so that the member a sink fails over to reads what
// the previous one wrote.
type Records interface {
	View(fn func(RecordTx) error) error
	Update(ctx context.Context, fn func(RecordTx) error) error
}

// RecordTx reads and writes one sink's records, keyed "<sink>/<key>";
// *state.Tx implements it.
type RecordTx interface {
	GetSink(sink, k string, v any) (bool, error)
	PutSink(sink, k string, v any) error
	DeleteSink(sink, k string) error
	// ForEachSink scans the keys under "<prefix>/", handing back the
	// rest of each key.
	ForEachSink(prefix string, fn func(k string, raw []byte) error) error
}

// BoltRecords keeps records in the state store (bucket sinks).
func BoltRecords(s *state.Store) Records {
	if s == nil {
		return nil
	}
	return boltRecords{s}
}

type boltRecords struct{ s *state.Store }

func (b boltRecords) View(fn func(RecordTx) error) error {
	return b.s.View(func(tx *state.Tx) error { return fn(tx) })
}

func (b boltRecords) Update(ctx context.Context, fn func(RecordTx) error) error {
	return b.s.Update(ctx, func(tx *state.Tx) error { return fn(tx) })
}

// KVRecords keeps records in a JetStream key-value bucket shared by the
// fleet (cluster.SinksBucket). A transaction reads from the bucket and
// writes at its end, each key compare-and-set against the revision it read:
// a member that lost its sink while frozen and wakes up cannot overwrite
// what the new active member wrote (its Update fails, and the event is
// retried with what is there now). Only the one active member of a sink
// writes its records, so a conflict means exactly that.
func KVRecords(kv jetstream.KeyValue) Records { return kvRecords{kv} }

type kvRecords struct{ kv jetstream.KeyValue }

// ErrRecordConflict is an Update that lost to another member's write.
var ErrRecordConflict = errors.New("the record was changed by another member")

func (r kvRecords) View(fn func(RecordTx) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), kvTimeout)
	defer cancel()
	return fn(&kvTx{ctx: ctx, kv: r.kv, readOnly: true})
}

func (r kvRecords) Update(ctx context.Context, fn func(RecordTx) error) error {
	ctx, cancel := context.WithTimeout(ctx, kvTimeout)
	defer cancel()
	tx := &kvTx{ctx: ctx, kv: r.kv, read: map[string]uint64{}}
	if err := fn(tx); err != nil {
		return err
	}
	return tx.commit()
}

// kvTx buffers writes; reads see them.
type kvTx struct {
	ctx      context.Context
	kv       jetstream.KeyValue
	readOnly bool
	// read is the revision each key was read at (0: absent).
	read   map[string]uint64
	writes []kvWrite
}

type kvWrite struct {
	key string
	val []byte // nil: delete
}

// kvKey maps "<sink>/<a>/<b.c>" to a bucket key "<sink>.<a>.<b=c>": slashes
// become the key's dot-separated tokens (so a prefix scan is a key
// filter) and the dots in a segment (event types) become '='.
func kvKey(k string) string {
	return strings.ReplaceAll(strings.ReplaceAll(k, ".", "="), "/", ".")
}

func kvUnkey(k string) string {
	return strings.ReplaceAll(strings.ReplaceAll(k, ".", "/"), "=", ".")
}

func (t *kvTx) get(k string) ([]byte, bool, error) {
	for i := len(t.writes) - 1; i >= 0; i-- {
		if t.writes[i].key == k {
			return t.writes[i].val, t.writes[i].val != nil, nil
		}
	}
	e, err := t.kv.Get(t.ctx, k)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		if t.read != nil {
			if _, ok := t.read[k]; !ok {
				t.read[k] = 0
			}
		}
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	if t.read != nil {
		if _, ok := t.read[k]; !ok {
			t.read[k] = e.Revision()
		}
	}
	return e.Value(), true, nil
}

func (t *kvTx) GetSink(sink, k string, v any) (bool, error) {
	key := kvKey(sink + "/" + k)
	raw, ok, err := t.get(key)
	if err != nil || !ok {
		return false, err
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return true, fmt.Errorf("sink record %s: %w", key, err)
	}
	return true, nil
}

func (t *kvTx) PutSink(sink, k string, v any) error {
	if t.readOnly {
		return errors.New("sink records: write in a read-only transaction")
	}
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	t.writes = append(t.writes, kvWrite{key: kvKey(sink + "/" + k), val: raw})
	return nil
}

func (t *kvTx) DeleteSink(sink, k string) error {
	if t.readOnly {
		return errors.New("sink records: write in a read-only transaction")
	}
	t.writes = append(t.writes, kvWrite{key: kvKey(sink + "/" + k)})
	return nil
}

func (t *kvTx) ForEachSink(prefix string, fn func(k string, raw []byte) error) error {
	p := kvKey(prefix) + "."
	lister, err := t.kv.ListKeysFiltered(t.ctx, p+">")
	if err != nil {
		return err
	}
	defer func() { _ = lister.Stop() }()
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	for _, k := range keys {
		raw, ok, err := t.get(k)
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		if err := fn(kvUnkey(strings.TrimPrefix(k, p)), raw); err != nil {
			return err
		}
	}
	return nil
}

// commit applies the writes in order, the first write of a key that was
// read compare-and-set against the revision read.
func (t *kvTx) commit() error {
	done := map[string]bool{}
	for _, w := range t.writes {
		rev, wasRead := t.read[w.key]
		cas := wasRead && !done[w.key]
		done[w.key] = true
		var err error
		switch {
		case w.val == nil && cas && rev == 0:
			continue // absent when read; nothing to delete
		case w.val == nil && cas:
			err = t.kv.Delete(t.ctx, w.key, jetstream.LastRevision(rev))
		case w.val == nil:
			err = t.kv.Delete(t.ctx, w.key)
		case cas && rev == 0:
			_, err = t.kv.Create(t.ctx, w.key, w.val)
		case cas:
			_, err = t.kv.Update(t.ctx, w.key, w.val, rev)
		default:
			_, err = t.kv.Put(t.ctx, w.key, w.val)
		}
		if errors.Is(err, jetstream.ErrKeyExists) || isWrongSeq(err) {
			return fmt.Errorf("sink record %s: %w", w.key, ErrRecordConflict)
		}
		if err != nil {
			return fmt.Errorf("sink record %s: %w", w.key, err)
		}
	}
	return nil
}

// isWrongSeq is a compare-and-set that found another revision.
func isWrongSeq(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
}

// kvTimeout bounds one transaction's round trips to the bucket.
const kvTimeout = 10 * time.Second
