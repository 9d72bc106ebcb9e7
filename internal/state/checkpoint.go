package state

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/backoff"
	"github.com/cakework-relay/cakework-relay/internal/health"
)

// checkpointer moves journaled records' seen ids and watches into bbolt,
// and records how far the journal's events were acknowledged (accept.go
// says why). Locks: mu serializes checkpoints and guards seq and ackedSeq;
// pendMu guards pend, which the accept loop appends to.
type checkpointer struct {
	every      time.Duration
	kickCh     chan struct{}
	stop, done chan struct{}

	pendMu sync.Mutex
	pend   []ckptRec

	mu sync.Mutex
	// seq is the last record checkpointed, ackedSeq the last whose events
	// (and every earlier record's) JetStream acknowledged, as in bbolt.
	seq, ackedSeq uint64
	// err is the last checkpoint's failure, nil after a success.
	err atomic.Pointer[error]
}

func newCheckpointer(every time.Duration) checkpointer {
	return checkpointer{every: every, kickCh: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
}

// kick asks for a checkpoint before the next tick.
func (c *checkpointer) kick() {
	select {
	case c.kickCh <- struct{}{}:
	default:
	}
}

// add queues journaled records for the next checkpoint and reports
// whether enough wait to run it early.
func (c *checkpointer) add(recs []ckptRec) (big bool) {
	c.pendMu.Lock()
	c.pend = append(c.pend, recs...)
	big = len(c.pend) >= ckptRecords
	c.pendMu.Unlock()
	return big
}

func (c *checkpointer) take() []ckptRec {
	c.pendMu.Lock()
	defer c.pendMu.Unlock()
	recs := c.pend
	c.pend = nil
	return recs
}

// putBack returns records a failed checkpoint took.
func (c *checkpointer) putBack(recs []ckptRec) {
	c.pendMu.Lock()
	c.pend = append(recs, c.pend...)
	c.pendMu.Unlock()
}

// ckptRec is a journaled record's bbolt side, waiting for the checkpoint.
type ckptRec struct {
	seq     uint64
	seen    [][]byte
	values  [][]byte // nil, or each seen key's value
	watches [][]byte
}

// ckptRecords records waiting start a checkpoint before its tick: a few
// milliseconds of bbolt work in the commit loop.
const ckptRecords = 8192

// maxPendingCheckpoint bounds the journaled records waiting for a
// checkpoint while checkpoints fail (bbolt cannot commit): past it the
// journal refuses webhooks, as the bbolt path did at once.
const maxPendingCheckpoint = 100000

// Journal watermarks in the meta bucket.
const (
	metaJournalCkpt  = "journal_checkpoint"
	metaJournalAcked = "journal_acked"
)

// Checkpoint writes the journaled seen ids and watches into bbolt, with the
// watermarks, deletes the outbox entries JetStream acknowledged, and
// recycles the journal segments nothing needs any more. It runs by itself
// every CheckpointEvery (unless that is negative); the poller calls it
// (through ApplyWatchQueue) so a queued watch is seen by its next tick.
func (s *Store) Checkpoint(ctx context.Context) error {
	return s.checkpoint(func(fn func(*Tx) error) error { return s.Update(ctx, fn) })
}

func (s *Store) checkpoint(update func(func(*Tx) error) error) error {
	c := &s.ckpt
	c.mu.Lock()
	defer c.mu.Unlock()
	recs := c.take()
	// Only what the bus synced may be forgotten (outboxQueue.releasable).
	acked, dels := s.out.releasable(c.ackedSeq)
	ckpt := c.seq
	if len(recs) > 0 {
		ckpt = recs[len(recs)-1].seq
	}
	if len(recs) == 0 && acked == c.ackedSeq && len(dels) == 0 {
		return nil
	}
	err := update(func(tx *Tx) error {
		if err := putRecords(tx, recs); err != nil {
			return err
		}
		if err := tx.deleteOutbox(dels); err != nil {
			return err
		}
		meta := tx.tx.Bucket(bMeta)
		if err := meta.Put([]byte(metaJournalCkpt), u64(ckpt)); err != nil {
			return err
		}
		return meta.Put([]byte(metaJournalAcked), u64(acked))
	})
	if err != nil {
		c.putBack(recs)
		err = fmt.Errorf("journal checkpoint: %w", err)
		c.err.Store(&err)
		return err
	}
	c.err.Store(nil)
	s.out.released(dels)
	c.seq, c.ackedSeq = ckpt, acked
	s.acc.j.Release(min(ckpt, acked))
	return nil
}

// putRecords writes journaled records' seen ids and watches where an
// Update would have: the expiry index and the watch queue.
func putRecords(tx *Tx, recs []ckptRec) error {
	idx := tx.tx.Bucket(bWebhookExpiry)
	for _, r := range recs {
		for i, k := range r.seen {
			var v []byte
			if r.values != nil {
				v = r.values[i]
			}
			if err := idx.Put(k, v); err != nil {
				return err
			}
		}
		for _, w := range r.watches {
			if err := tx.queueWatch(w); err != nil {
				return err
			}
		}
	}
	return nil
}

func (s *Store) checkpointLoop() {
	c := &s.ckpt
	defer close(c.done)
	if c.every < 0 {
		<-c.stop
		return
	}
	t := time.NewTicker(c.every)
	defer t.Stop()
	retry := newCkptRetry(c.every)
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
		case <-c.kickCh:
		}
		if s.acc.failed.Load() != nil {
			// Gives the accept loop a batch to probe the journal on
			// (tryRecover paces the probes).
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_ = s.Accept(ctx, func(*AcceptTx) error { return nil })
			cancel()
		}
		if !retry.due(time.Now()) {
			continue
		}
		err := s.Checkpoint(context.Background())
		if errors.Is(err, ErrClosed) {
			continue
		}
		retry.done(time.Now(), err, s.log)
	}
}

// ckptRetry paces checkpoints that fail (a full disk, a failing bbolt
// write): the next try waits a backoff (the checkpoint interval doubling
// to maxCkptBackoff), and the failure is logged when it starts, at most
// every health.DefaultRepeat while it lasts, and when it recovers.
type ckptRetry struct {
	b       backoff.Backoff
	retryAt time.Time
	health  health.Tracker
}

// maxCkptBackoff bounds the wait between failing checkpoints.
const maxCkptBackoff = 10 * time.Second

func newCkptRetry(every time.Duration) *ckptRetry {
	return &ckptRetry{b: backoff.Backoff{Initial: every, Max: maxCkptBackoff, Jitter: -1}}
}

// due reports whether a checkpoint may run at now.
func (r *ckptRetry) due(now time.Time) bool { return !now.Before(r.retryAt) }

// done records a checkpoint's outcome at now.
func (r *ckptRetry) done(now time.Time, err error, log *slog.Logger) {
	if err == nil {
		r.b.Reset()
		r.retryAt = time.Time{}
		if ch, st := r.health.OK(now); ch == health.Recovered {
			log.Warn("journal checkpoint recovered", "failures", st.Failures, "failing_for", now.Sub(st.Since).Round(time.Millisecond))
		}
		return
	}
	wait := r.b.Next()
	r.retryAt = now.Add(wait)
	switch ch, st := r.health.Fail(now, err); ch {
	case health.Failing:
		log.Warn("journal checkpoint failed; retrying with backoff (webhooks are refused once 100,000 wait for one)", "err", err, "retry_in", wait)
	case health.StillFailing:
		log.Warn("journal checkpoint still failing", "err", err, "failures", st.Failures, "since", st.Since.UTC().Format(time.RFC3339), "retry_in", wait)
	}
}
