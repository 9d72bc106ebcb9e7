package state

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/cakework-relay/cakework-relay/internal/jsonenc"
)

// The watch queue lets the webhook hot path register a poller watch with an
// append (a sequential key) instead of an insert into the watches bucket at
// a random place. The poller folds the queue into the watches bucket with
// ApplyWatchQueue before it reads watches, so a queued watch is seen by the
// next tick.

var bWatchQueue = []byte("watch_queue")

type queuedWatch struct {
	Kind  string `json:"kind"`
	ID    string `json:"id"`
	Watch Watch  `json:"watch"`
}

// EncodeQueuedWatch encodes a watch for QueueWatch, so callers can do it
// outside the commit loop. The bytes are json.Marshal's (a test compares
// them), written without reflection: it runs once per webhook.
func EncodeQueuedWatch(kind, id string, w Watch) ([]byte, error) {
	b := make([]byte, 0, 64+len(kind)+len(id)+len(w.Source))
	b = append(b, `{"kind":`...)
	b = jsonenc.AppendString(b, kind)
	b = append(b, `,"id":`...)
	b = jsonenc.AppendString(b, id)
	b = append(b, `,"watch":{"source":`...)
	b = jsonenc.AppendString(b, w.Source)
	b = append(b, `,"addedAt":`...)
	b, err := jsonenc.AppendTime(b, w.AddedAt)
	if err != nil {
		return nil, err
	}
	return append(b, "}}"...), nil
}

// queueWatch appends a watch encoded by EncodeQueuedWatch (the checkpoint
// moves AcceptTx.QueueWatch's here).
func (t *Tx) queueWatch(raw []byte) error {
	b := t.tx.Bucket(bWatchQueue)
	seq, err := b.NextSequence()
	if err != nil {
		return err
	}
	return b.Put(u64(seq), raw)
}

// ApplyWatchQueue moves queued watches into the watches bucket, in the order
// they were queued, in chunks. An existing watch keeps its source and time.
// It reports how many watches were added.
func (s *Store) ApplyWatchQueue(ctx context.Context) (int, error) {
	// Watches queued by Accept reach the bucket with the checkpoint. If it
	// fails, the watches already in bbolt are still applied.
	ckptErr := s.Checkpoint(ctx)
	n, err := s.applyWatchQueue(ctx)
	if ckptErr != nil {
		err = errors.Join(err, fmt.Errorf("apply queued watches: %w", ckptErr))
	}
	return n, err
}

func (s *Store) applyWatchQueue(ctx context.Context) (int, error) {
	return s.drainWatchQueue(ctx, func(tx *Tx, kind, id string, w Watch) (bool, error) {
		b := tx.tx.Bucket(bWatches)
		wk := key(kind, id)
		if b.Get(wk) != nil {
			return false, nil
		}
		raw, err := json.Marshal(w)
		if err != nil {
			return false, err
		}
		return true, b.Put(wk, raw)
	})
}

// DrainWatchQueue hands every queued watch to fn, then removes it from the
// queue, in the order they were queued. A fleet member moves them to the
// fleet's queue this way: the watch list lives with the leader. An error
// from fn keeps the chunk queued for the next call.
func (s *Store) DrainWatchQueue(ctx context.Context, fn func(kind, id string, w Watch) error) (int, error) {
	if err := s.Checkpoint(ctx); err != nil {
		return 0, fmt.Errorf("drain queued watches: %w", err)
	}
	return s.drainWatchQueue(ctx, func(_ *Tx, kind, id string, w Watch) (bool, error) {
		return true, fn(kind, id, w)
	})
}

// drainWatchQueue takes the queue in chunks, calling apply for each
// readable entry in a transaction that also deletes the chunk.
func (s *Store) drainWatchQueue(ctx context.Context, apply func(tx *Tx, kind, id string, w Watch) (bool, error)) (int, error) {
	const chunk = 5000
	total := 0
	for {
		added, more := 0, false
		err := s.Update(ctx, func(tx *Tx) error {
			added, more = 0, false
			q := tx.tx.Bucket(bWatchQueue)
			c := q.Cursor()
			var done [][]byte
			for k, v := c.First(); k != nil; k, v = c.Next() {
				if len(done) == chunk {
					more = true
					break
				}
				done = append(done, append([]byte(nil), k...))
				var qw queuedWatch
				if err := json.Unmarshal(v, &qw); err != nil || qw.Kind == "" || qw.ID == "" {
					continue // unreadable: dropped rather than blocking the queue
				}
				ok, err := apply(tx, qw.Kind, qw.ID, qw.Watch)
				if err != nil {
					return err
				}
				if ok {
					added++
				}
			}
			for _, k := range done {
				if err := q.Delete(k); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return total, fmt.Errorf("apply queued watches: %w", err)
		}
		total += added
		if !more {
			return total, nil
		}
	}
}
