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
	n, _, err := s.ApplyWatchQueueCapped(ctx, 0)
	return n, err
}

// ApplyWatchQueueCapped is ApplyWatchQueue with the build watches capped
// at maxBuilds (0: no cap): a queued build watch that would pass it is
// dropped from the queue and counted in refused.
func (s *Store) ApplyWatchQueueCapped(ctx context.Context, maxBuilds int) (added, refused int, err error) {
	// Watches queued by Accept reach the bucket with the checkpoint. If it
	// fails, the watches already in bbolt are still applied.
	ckptErr := s.Checkpoint(ctx)
	added, refused, err = s.applyWatchQueue(ctx, maxBuilds)
	if ckptErr != nil {
		err = errors.Join(err, fmt.Errorf("apply queued watches: %w", ckptErr))
	}
	return added, refused, err
}

func (s *Store) applyWatchQueue(ctx context.Context, maxBuilds int) (int, int, error) {
	return s.foldWatchQueue(ctx, 5000, func(tx *Tx) func(queuedWatch) (bool, bool, error) {
		w := tx.tx.Bucket(bWatches)
		builds := -1 // counted once a build watch is queued
		return func(qw queuedWatch) (added, refused bool, err error) {
			wk := key(qw.Kind, qw.ID)
			if w.Get(wk) != nil {
				return false, false, nil
			}
			if qw.Kind == KindBuild && maxBuilds > 0 {
				if builds < 0 {
					builds = countPrefix(w, KindBuild)
				}
				if builds >= maxBuilds {
					return false, true, nil
				}
				builds++
			}
			raw, err := json.Marshal(qw.Watch)
			if err != nil {
				return false, false, err
			}
			return true, false, w.Put(wk, raw)
		}
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
	n, _, err := s.foldWatchQueue(ctx, 500, func(*Tx) func(queuedWatch) (bool, bool, error) {
		return func(qw queuedWatch) (bool, bool, error) { return true, false, fn(qw.Kind, qw.ID, qw.Watch) }
	})
	return n, err
}

// foldWatchQueue takes the queue in chunks, in the order it was queued:
// for each transaction, per(tx) gives the function that handles one
// readable entry (it says whether it was added, or refused); the chunk is
// deleted in the same transaction. Unreadable entries are dropped rather
// than blocking the queue.
func (s *Store) foldWatchQueue(ctx context.Context, chunk int, per func(tx *Tx) func(queuedWatch) (added, refused bool, err error)) (int, int, error) {
	total, totalRefused := 0, 0
	for {
		added, refused, folded, more := 0, 0, 0, false
		err := s.Update(ctx, func(tx *Tx) error {
			added, refused, folded, more = 0, 0, 0, false
			q := tx.tx.Bucket(bWatchQueue)
			apply := per(tx)
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
					continue
				}
				a, r, err := apply(qw)
				if err != nil {
					return err
				}
				if a {
					added++
				}
				if r {
					refused++
				}
			}
			for _, k := range done {
				if err := q.Delete(k); err != nil {
					return err
				}
			}
			folded = len(done)
			return nil
		})
		if err != nil {
			return total, totalRefused, fmt.Errorf("apply queued watches: %w", err)
		}
		s.queuedWatches.Add(-int64(folded))
		total += added
		totalRefused += refused
		if !more {
			return total, totalRefused, nil
		}
	}
}
