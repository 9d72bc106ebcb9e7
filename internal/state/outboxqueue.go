package state

import (
	"cmp"
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// outboxQueue is the outbox the publisher drains: the bbolt entries that
// Updates (the poller) commit, and the journal's in-memory queue of the
// events Accepts (webhooks) made durable. It owns their depth, the
// acknowledged bbolt entries held until a bus sync, and the bus sync
// itself; the checkpoint asks it (releasable) what may be forgotten after a
// sync, and tells it (released) what it deleted.
//
// Locks: jq has its own; heldMu guards held; the rest is atomic.
type outboxQueue struct {
	log *slog.Logger
	// kick asks for a checkpoint (held entries wait for one).
	kick func()

	// depth counts the bbolt entries, held ones included, until deleted.
	depth  atomic.Int64
	notify chan struct{}
	jq     jqueue

	// held are bbolt entries JetStream acknowledged, waiting for a bus
	// sync (in the checkpoint) before they are deleted; peek skips them.
	heldMu sync.Mutex
	held   map[uint64]struct{}

	// busSync makes what the bus acknowledged durable (SetBusSync);
	// busSyncFailed is whether its last call failed, for logging.
	busSync                          atomic.Pointer[func() error]
	busSyncFailed                    atomic.Bool
	busSyncs, busSyncErrs, busSyncNs atomic.Int64
	busSyncErr                       atomic.Pointer[error]
}

func newOutboxQueue(log *slog.Logger, kick func()) outboxQueue {
	return outboxQueue{log: log, kick: kick, notify: make(chan struct{}, 1)}
}

func (q *outboxQueue) len() int { return int(q.depth.Load()) + q.jq.len() }

func (q *outboxQueue) wake() {
	select {
	case q.notify <- struct{}{}:
	default:
	}
}

// committed counts the entries a bbolt commit added (or deleted).
func (q *outboxQueue) committed(added int64) {
	if added == 0 {
		return
	}
	q.depth.Add(added)
	if added > 0 {
		q.wake()
	}
}

// journaled queues the events of journal records made durable, up to
// record last.
func (q *outboxQueue) journaled(es []jEntry, last uint64) {
	q.jq.push(es, last)
	if len(es) > 0 {
		q.wake()
	}
}

// OutboxEntry is one event waiting for the bus. Entries returned by the
// same PeekOutbox share memory: treat Payload as read-only. (The JSON tags
// read entries stored before the binary format, see outboxenc.go.)
type OutboxEntry struct {
	Seq     uint64 `json:"-"`
	Subject string `json:"subject"`
	MsgID   string `json:"msgId"`
	Payload []byte `json:"payload"`
	// journal: the entry is in the journal's queue (accept.go), Seq is
	// its place there.
	journal bool
}

// outboxChunk is the size of the buffers peek copies entries into.
const outboxChunk = 64 << 10

// peek returns up to max of the oldest entries: the bbolt ones in commit
// order, then the journal's in commit order. view reads bbolt (only when
// it has entries).
func (q *outboxQueue) peek(max int, view func(func(*bolt.Tx) error) error) ([]OutboxEntry, error) {
	var out []OutboxEntry
	if q.depth.Load() == 0 {
		return q.jq.peek(out, max), nil
	}
	// With both queues full (a backlog after an outage), give each half
	// of a batch, so neither waits for the other to drain.
	boltMax := max
	if n := q.jq.len(); n > 0 {
		boltMax = max - min(n, max/2)
	}
	err := view(func(btx *bolt.Tx) error {
		// bbolt's values live only as long as the transaction: copy them
		// into a few large chunks, which the entries then point into.
		var arena []byte
		c := btx.Bucket(bOutbox).Cursor()
		q.heldMu.Lock()
		defer q.heldMu.Unlock()
		for k, v := c.First(); k != nil && len(out) < boltMax; k, v = c.Next() {
			if _, held := q.held[binary.BigEndian.Uint64(k)]; held {
				continue
			}
			if out == nil {
				out = make([]OutboxEntry, 0, min(max, q.len()+16))
			}
			if cap(arena)-len(arena) < len(v) {
				arena = make([]byte, 0, outboxChunk+len(v))
			}
			start := len(arena)
			arena = append(arena, v...)
			e := OutboxEntry{Seq: binary.BigEndian.Uint64(k)}
			if err := decodeOutbox(arena[start:len(arena):len(arena)], &e); err != nil {
				return fmt.Errorf("outbox entry %d: %w", e.Seq, err)
			}
			out = append(out, e)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return q.jq.peek(out, max), nil
}

// acked takes entries JetStream acknowledged (as peek returned them) and
// returns the bbolt ones to delete now: none while a bus sync is set (the
// next checkpoint deletes them after its sync). The journal's need no
// write: the next checkpoint records how far JetStream has acknowledged.
func (q *outboxQueue) acked(entries []OutboxEntry) (deleteNow []uint64) {
	var seqs, jseqs []uint64
	for _, e := range entries {
		if e.journal {
			jseqs = append(jseqs, e.Seq)
		} else {
			seqs = append(seqs, e.Seq)
		}
	}
	q.jq.remove(jseqs)
	if len(seqs) == 0 || q.busSync.Load() == nil {
		return seqs
	}
	q.heldMu.Lock()
	if q.held == nil {
		q.held = map[uint64]struct{}{}
	}
	for _, s := range seqs {
		q.held[s] = struct{}{}
	}
	q.heldMu.Unlock()
	q.kick()
	return nil
}

// releasable is what a checkpoint may forget: the last journal record
// whose events (and every earlier record's) JetStream acknowledged, and
// the held bbolt entries (a snapshot: entries held later wait for the next
// checkpoint). What was acknowledged before the bus sync is on the bus's
// disk after it; only that may go. When the sync fails it returns
// prevAcked and no entries, and the events are published again after a
// crash. Without a change since prevAcked it does not sync.
func (q *outboxQueue) releasable(prevAcked uint64) (ackedRec uint64, dels []uint64) {
	ackedRec, dels = q.jq.ackedUpTo(), q.heldSeqs()
	if (ackedRec != prevAcked || len(dels) > 0) && q.syncBus() != nil {
		return prevAcked, nil
	}
	return ackedRec, dels
}

// released forgets held entries the checkpoint deleted.
func (q *outboxQueue) released(dels []uint64) {
	q.heldMu.Lock()
	for _, s := range dels {
		delete(q.held, s)
	}
	q.heldMu.Unlock()
}

func (q *outboxQueue) heldSeqs() []uint64 {
	q.heldMu.Lock()
	defer q.heldMu.Unlock()
	if len(q.held) == 0 {
		return nil
	}
	l := make([]uint64, 0, len(q.held))
	for s := range q.held {
		l = append(l, s)
	}
	slices.Sort(l)
	return l
}

func (q *outboxQueue) setBusSync(fn func() error) {
	if fn == nil {
		q.busSync.Store(nil)
		return
	}
	q.busSync.Store(&fn)
}

// syncBus runs the bus sync, if any, and logs when it starts or stops
// failing.
func (q *outboxQueue) syncBus() error {
	fn := q.busSync.Load()
	if fn == nil {
		return nil
	}
	t0 := time.Now()
	err := (*fn)()
	q.busSyncNs.Add(int64(time.Since(t0)))
	if err != nil {
		q.busSyncErrs.Add(1)
		err = fmt.Errorf("the bus acknowledged events it has not synced to disk: %w", err)
		q.busSyncErr.Store(&err)
		if !q.busSyncFailed.Swap(true) {
			q.log.Error("cannot sync the bus's files; acknowledged events stay in the journal and the outbox until it works", "err", err)
		}
		return err
	}
	q.busSyncs.Add(1)
	q.busSyncErr.Store(nil)
	if q.busSyncFailed.Swap(false) {
		q.log.Info("the bus's files sync again")
	}
	return nil
}

// OutboxDepth is the number of events waiting to be published.
func (s *Store) OutboxDepth() int { return s.out.len() }

// OutboxNotify receives a value after a commit added outbox entries.
func (s *Store) OutboxNotify() <-chan struct{} { return s.out.notify }

// PeekOutbox returns up to max of the oldest outbox entries: those of
// Updates (the poller's) in commit order, then those of Accepts (webhooks)
// in commit order.
func (s *Store) PeekOutbox(max int) ([]OutboxEntry, error) {
	if s.out.depth.Load() == 0 && s.isClosed() {
		return nil, ErrClosed
	}
	return s.out.peek(max, func(fn func(*bolt.Tx) error) error {
		return s.View(func(tx *Tx) error { return fn(tx.tx) })
	})
}

// DeleteOutbox removes published entries (as PeekOutbox returned them).
func (s *Store) DeleteOutbox(ctx context.Context, entries []OutboxEntry) error {
	seqs := s.out.acked(entries)
	if len(seqs) == 0 {
		return nil
	}
	return s.Update(ctx, func(tx *Tx) error { return tx.deleteOutbox(seqs) })
}

// deleteOutbox deletes outbox entries, skipping those already gone (an
// entry can be acknowledged twice: a peek from before an earlier delete).
func (t *Tx) deleteOutbox(seqs []uint64) error {
	b := t.tx.Bucket(bOutbox)
	for _, seq := range seqs {
		k := u64(seq)
		if b.Get(k) == nil {
			continue
		}
		if err := b.Delete(k); err != nil {
			return err
		}
		t.outboxAdded--
	}
	return nil
}

// SetBusSync sets the function that makes what the bus acknowledged so far
// durable on disk (bus.StreamSyncer). The store calls it before it forgets
// acknowledged events: before it deletes outbox entries, and before a
// checkpoint records how far the journal's events were acknowledged. Nil
// (the default, and for an external NATS) trusts the acknowledgement.
func (s *Store) SetBusSync(fn func() error) { s.out.setBusSync(fn) }

// BusSyncError is the last bus sync's failure, nil after a success (a
// readiness check: while it fails, acknowledged events pile up in the
// journal and the outbox).
func (s *Store) BusSyncError() error {
	if e := s.out.busSyncErr.Load(); e != nil {
		return *e
	}
	return nil
}

// jEntry is an outbox entry waiting in the journal queue.
type jEntry struct {
	seq uint64 // this entry's, increasing
	rec uint64 // the journal record's
	jOut
}

// jqueue is the journal's outbox: events committed to the journal and not
// yet acknowledged by JetStream, in commit order.
type jqueue struct {
	mu   sync.Mutex
	q    []jEntry
	next uint64 // seq of the next entry
	// last is the last record committed; with an empty queue every record
	// up to it is acknowledged.
	last uint64
}

func (q *jqueue) push(es []jEntry, last uint64) {
	q.mu.Lock()
	for i := range es {
		q.next++
		es[i].seq = q.next
	}
	q.q = append(q.q, es...)
	q.last = last
	q.mu.Unlock()
}

func (q *jqueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.q)
}

// ackedUpTo is the last record all of whose events (and those of every
// record before it) were acknowledged.
func (q *jqueue) ackedUpTo() uint64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.q) > 0 {
		return q.q[0].rec - 1
	}
	return q.last
}

func (q *jqueue) peek(out []OutboxEntry, max int) []OutboxEntry {
	q.mu.Lock()
	defer q.mu.Unlock()
	for i := 0; i < len(q.q) && len(out) < max; i++ {
		e := &q.q[i]
		out = append(out, OutboxEntry{Seq: e.seq, Subject: e.subject, MsgID: e.msgID, Payload: e.payload, journal: true})
	}
	return out
}

// remove drops the entries with these seqs (usually a prefix of the queue)
// and reports how many went.
func (q *jqueue) remove(seqs []uint64) int {
	if len(seqs) == 0 {
		return 0
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	n := 0
	for n < len(q.q) && n < len(seqs) && q.q[n].seq == seqs[n] {
		n++
	}
	if n == len(seqs) {
		clear(q.q[:n])
		q.q = q.q[n:]
		if len(q.q) == 0 {
			q.q = nil
		}
		return n
	}
	drop := make(map[uint64]bool, len(seqs))
	for _, s := range seqs {
		drop[s] = true
	}
	kept := q.q[:0]
	removed := 0
	for _, e := range q.q {
		if drop[e.seq] {
			removed++
			continue
		}
		kept = append(kept, e)
	}
	clear(q.q[len(kept):])
	q.q = kept
	return removed
}

// OutboxMark is a place in the outbox: it covers the entries committed up
// to some moment (in each of the two queues, up to a sequence). The
// publisher uses it to know which entries a look at the stream covers.
type OutboxMark struct{ bolt, journal uint64 }

// Covers reports whether e was committed at or before m.
func (m OutboxMark) Covers(e OutboxEntry) bool {
	if e.journal {
		return e.Seq <= m.journal
	}
	return e.Seq <= m.bolt
}

// With returns m moved up to cover es as well (entries PeekOutbox returned).
func (m OutboxMark) With(es ...OutboxEntry) OutboxMark {
	for _, e := range es {
		if e.journal {
			m.journal = max(m.journal, e.Seq)
		} else {
			m.bolt = max(m.bolt, e.Seq)
		}
	}
	return m
}

// OutboxEnd returns a mark that covers every entry in the outbox now, and
// none committed later.
func (s *Store) OutboxEnd() (OutboxMark, error) {
	var m OutboxMark
	s.out.jq.mu.Lock()
	m.journal = s.out.jq.next
	s.out.jq.mu.Unlock()
	err := s.View(func(tx *Tx) error {
		m.bolt = tx.tx.Bucket(bOutbox).Sequence()
		return nil
	})
	return m, err
}

// OutboxWaits reports whether an entry after after and at or before upTo
// is still waiting to be published (acknowledged entries held for a bus
// sync do not count).
func (s *Store) OutboxWaits(after, upTo OutboxMark) (bool, error) {
	s.out.jq.mu.Lock()
	q := s.out.jq.q
	i, _ := slices.BinarySearchFunc(q, after.journal+1, func(e jEntry, seq uint64) int { return cmp.Compare(e.seq, seq) })
	waits := i < len(q) && q[i].seq <= upTo.journal
	s.out.jq.mu.Unlock()
	if waits || upTo.bolt <= after.bolt || s.out.depth.Load() == 0 {
		return waits, nil
	}
	err := s.View(func(tx *Tx) error {
		c := tx.tx.Bucket(bOutbox).Cursor()
		s.out.heldMu.Lock()
		defer s.out.heldMu.Unlock()
		for k, _ := c.Seek(u64(after.bolt + 1)); k != nil; k, _ = c.Next() {
			seq := binary.BigEndian.Uint64(k)
			if seq > upTo.bolt {
				return nil
			}
			if _, held := s.out.held[seq]; !held {
				waits = true
				return nil
			}
		}
		return nil
	})
	return waits, err
}
