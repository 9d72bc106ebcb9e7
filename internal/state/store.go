package state

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/cakework-relay/cakework-relay/internal/journal"
)

// FileName is the bbolt file inside data_dir.
const FileName = "relay.db"

// ErrClosed is returned by calls on a closed Store.
var ErrClosed = errors.New("state store is closed")

// Options configure Open.
type Options struct {
	// Dir is the data directory; the file is Dir/relay.db.
	Dir string
	// LockTimeout bounds the wait for the file lock. Default 1s.
	LockTimeout time.Duration
	// MaxBatch caps how many Updates share one commit. Default 1024.
	MaxBatch int
	// LingerFor and LingerFill: when several Updates are waiting, the
	// commit loop waits up to LingerFor for the batch to reach LingerFill
	// before committing. Defaults 200µs and 32; a negative LingerFor turns
	// it off. Measured with bench/ingest: +15 to 30% throughput at 64
	// concurrent webhooks.
	LingerFor  time.Duration
	LingerFill int
	// JournalSegmentBytes is the size of a journal segment (accept.go).
	// Default 32 MiB.
	JournalSegmentBytes int64
	// CheckpointEvery is how often journaled seen ids and watches are
	// written into bbolt. Default 100ms. Negative: never in the background
	// (only when Checkpoint is called; for tests that step checkpoints).
	CheckpointEvery time.Duration
	Logger          *slog.Logger

	// journalSync replaces the journal's fdatasync (tests make it fail).
	journalSync func(*os.File) error
}

// Store is the bbolt-backed state. It is safe for concurrent use.
type Store struct {
	db         *bolt.DB
	path       string
	log        *slog.Logger
	maxBatch   int
	lingerFor  time.Duration
	lingerFill int

	reqs    chan *request
	stop    chan struct{}
	stopped chan struct{}
	closeMu sync.RWMutex
	closed  bool

	outboxDepth atomic.Int64
	notify      chan struct{}

	// seen is the in-memory index of remembered webhook ids (seen.go).
	seen seenIndex

	commits, updates atomic.Int64

	// The journal (accept.go): its batch loop, its outbox queue and its
	// checkpoint.
	j                  *journal.Journal
	jbuf               []byte
	areqs              chan *acceptReq
	astop, astopped    chan struct{}
	jq                 jqueue
	jbatches, jrecords atomic.Int64
	jwriteNs           atomic.Int64
	pendMu             sync.Mutex
	pend               []ckptRec
	ckptEvery          time.Duration
	ckptKick           chan struct{}
	ckptStop, ckptDone chan struct{}
	ckptMu             sync.Mutex
	ckptSeq, ackedSeq  uint64
	// jfailed is the journal's write failure, ckptErr the last checkpoint's
	// (nil after a success).
	jfailed, ckptErr atomic.Pointer[error]
	// busSync makes what the bus acknowledged durable (SetBusSync);
	// busSyncFailed is whether its last call failed, for logging.
	busSync                          atomic.Pointer[func() error]
	busSyncFailed                    atomic.Bool
	busSyncs, busSyncErrs, busSyncNs atomic.Int64
	busSyncErr                       atomic.Pointer[error]
	// ackedBolt holds outbox entries JetStream acknowledged, waiting for
	// a bus sync (in the checkpoint) before they are deleted; PeekOutbox
	// skips them, OutboxDepth counts them until they are deleted.
	ackedMu   sync.Mutex
	ackedBolt map[uint64]struct{}
}

type request struct {
	fn   func(*Tx) error
	done chan error
}

// Open opens or creates Dir/relay.db, migrates it, and starts the commit
// loop.
func Open(opts Options) (*Store, error) {
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = time.Second
	}
	if opts.LingerFor == 0 {
		opts.LingerFor = 200 * time.Microsecond
	}
	if opts.LingerFill <= 0 {
		opts.LingerFill = 32
	}
	if opts.LingerFor < 0 {
		opts.LingerFill = 0
	}
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 1024
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.JournalSegmentBytes <= 0 {
		opts.JournalSegmentBytes = 32 << 20
	}
	if opts.CheckpointEvery == 0 {
		opts.CheckpointEvery = 100 * time.Millisecond
	}
	if err := os.MkdirAll(opts.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("create data_dir %s: %w (set data_dir to a writable directory)", opts.Dir, err)
	}
	path := filepath.Join(opts.Dir, FileName)
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:        opts.LockTimeout,
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
	})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("open %s: the file is locked by another process (is another relay using data_dir %s?); stop it or set a different data_dir", path, opts.Dir)
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w (check that data_dir is writable)", path, err)
	}
	s := &Store{
		db:         db,
		path:       path,
		log:        opts.Logger,
		maxBatch:   opts.MaxBatch,
		lingerFor:  opts.LingerFor,
		lingerFill: opts.LingerFill,
		reqs:       make(chan *request, opts.MaxBatch),
		stop:       make(chan struct{}),
		stopped:    make(chan struct{}),
		notify:     make(chan struct{}, 1),
		areqs:      make(chan *acceptReq, opts.MaxBatch),
		astop:      make(chan struct{}),
		astopped:   make(chan struct{}),
		ckptEvery:  opts.CheckpointEvery,
		ckptKick:   make(chan struct{}, 1),
		ckptStop:   make(chan struct{}),
		ckptDone:   make(chan struct{}),
	}
	if err := s.migrate(); err != nil {
		db.Close()
		return nil, err
	}
	// Before the seen index is loaded: the replay puts journaled ids into
	// the expiry index.
	if err := s.openJournal(opts.JournalSegmentBytes, opts.journalSync); err != nil {
		db.Close()
		return nil, err
	}
	if err := db.View(func(tx *bolt.Tx) error {
		s.outboxDepth.Store(int64(tx.Bucket(bOutbox).Stats().KeyN))
		if err := s.seen.load(tx); err != nil {
			return fmt.Errorf("webhook ids: %w", err)
		}
		return nil
	}); err != nil {
		db.Close()
		return nil, fmt.Errorf("read outbox of %s: %w", path, err)
	}
	go s.commitLoop()
	go s.acceptLoop()
	go s.checkpointLoop()
	return s, nil
}

// Close stops the commit loop after the Updates already queued, then closes
// the file. It is safe to call twice.
func (s *Store) Close() error {
	s.closeMu.Lock()
	if s.closed {
		s.closeMu.Unlock()
		return nil
	}
	s.closed = true
	s.closeMu.Unlock()
	// The journal's queued batches, then the checkpoint, then the commit
	// loop; a last checkpoint straight on bbolt keeps the watermarks.
	close(s.astop)
	<-s.astopped
	close(s.ckptStop)
	<-s.ckptDone
	close(s.stop)
	<-s.stopped
	cerr := s.checkpoint(func(fn func(*Tx) error) error {
		return s.db.Update(func(btx *bolt.Tx) error { return fn(&Tx{tx: btx, seen: &s.seen}) })
	})
	jerr := s.j.Close()
	return errors.Join(cerr, jerr, s.db.Close())
}

func (s *Store) isClosed() bool {
	s.closeMu.RLock()
	defer s.closeMu.RUnlock()
	return s.closed
}

// Ready reports whether the store can take writes.
func (s *Store) Ready() error {
	s.closeMu.RLock()
	defer s.closeMu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	if e := s.jfailed.Load(); e != nil {
		return *e
	}
	return nil
}

// Update runs fn in a read-write transaction shared with other concurrent
// callers, and returns once the transaction is durably committed (or fn's
// error). fn may run more than once; see the package doc.
func (s *Store) Update(ctx context.Context, fn func(*Tx) error) error {
	r := &request{fn: fn, done: make(chan error, 1)}
	if err := submit(s, ctx, s.reqs, r); err != nil {
		return err
	}
	// Once queued the commit happens whatever the caller does; wait for it so
	// the caller never reports failure for something that was committed.
	return <-r.done
}

// submit queues r for a batch loop, unless the store is closed or ctx
// ends first.
func submit[R any](s *Store, ctx context.Context, ch chan<- R, r R) error {
	s.closeMu.RLock()
	defer s.closeMu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	select {
	case ch <- r:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// View runs fn in a read-only transaction.
func (s *Store) View(fn func(*Tx) error) error {
	// Not Ready: after a journal failure, reads (the publisher's among
	// them) go on.
	if s.isClosed() {
		return ErrClosed
	}
	return s.db.View(func(btx *bolt.Tx) error { return fn(&Tx{tx: btx, seen: &s.seen}) })
}

// lingerFor gathers requests from ch until the batch has fill of them or d
// has passed.
func lingerFor[R any](ch <-chan R, batch []R, fill int, d time.Duration) []R {
	t := time.NewTimer(d)
	defer t.Stop()
	for len(batch) < fill {
		select {
		case r := <-ch:
			batch = append(batch, r)
		case <-t.C:
			return batch
		}
	}
	return batch
}

func (s *Store) commitLoop() {
	defer close(s.stopped)
	// Several writers are arriving: wait a moment for more, so one commit
	// (two fdatasyncs) serves more of them. A lone writer (the poller, one
	// request) never waits.
	batchLoop(s.reqs, s.stop, s.maxBatch, s.lingerFill, s.lingerFor, s.commit)
}

// batchLoop is the group commit of Updates and Accepts: it takes the
// requests waiting in reqs (up to maxBatch) as one batch, and when more than
// one but fewer than fill arrived, waits up to linger for fill; while run
// works on a batch, the next one gathers. After stop it runs what was
// queued before and returns.
func batchLoop[R any](reqs <-chan R, stop <-chan struct{}, maxBatch, fill int, linger time.Duration, run func([]R)) {
	batch := make([]R, 0, maxBatch)
	for {
		batch = batch[:0]
		select {
		case r := <-reqs:
			batch = append(batch, r)
		case <-stop:
			for {
				select {
				case r := <-reqs:
					batch = append(batch, r)
					continue
				default:
				}
				break
			}
			if len(batch) > 0 {
				run(batch)
			}
			return
		}
	gather:
		for len(batch) < maxBatch {
			select {
			case r := <-reqs:
				batch = append(batch, r)
			default:
				break gather
			}
		}
		if len(batch) > 1 && len(batch) < fill {
			batch = lingerFor(reqs, batch, fill, linger)
		}
		run(batch)
	}
}

// commit runs the batch in one transaction. A function that fails is
// answered with its error and the rest are retried without it.
func (s *Store) commit(batch []*request) {
	for len(batch) > 0 {
		failed := -1
		var added int64
		var seen seenChanges
		err := s.db.Update(func(btx *bolt.Tx) error {
			tx := &Tx{tx: btx, seen: &s.seen}
			for i, r := range batch {
				if err := r.fn(tx); err != nil {
					failed = i
					return err
				}
			}
			added = tx.outboxAdded
			seen = tx.seenCh
			return nil
		})
		if failed >= 0 {
			batch[failed].done <- err
			batch = append(batch[:failed:failed], batch[failed+1:]...)
			continue
		}
		if err == nil {
			// Only now, with the commit durable, do the ids count as seen.
			s.seen.apply(&seen)
			s.commits.Add(1)
			s.updates.Add(int64(len(batch)))
		}
		if err == nil && added != 0 {
			s.outboxDepth.Add(added)
			if added > 0 {
				select {
				case s.notify <- struct{}{}:
				default:
				}
			}
		}
		if err != nil {
			err = fmt.Errorf("commit %s: %w", s.path, err)
		}
		for _, r := range batch {
			r.done <- err
		}
		return
	}
}

// OutboxDepth is the number of events waiting to be published.
func (s *Store) OutboxDepth() int { return int(s.outboxDepth.Load()) + s.jq.len() }

// OutboxNotify receives a value after a commit added outbox entries.
func (s *Store) OutboxNotify() <-chan struct{} { return s.notify }

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

// outboxChunk is the size of the buffers PeekOutbox copies entries into.
const outboxChunk = 64 << 10

// PeekOutbox returns up to max of the oldest outbox entries: those of
// Updates (the poller's) in commit order, then those of Accepts (webhooks)
// in commit order.
func (s *Store) PeekOutbox(max int) ([]OutboxEntry, error) {
	var out []OutboxEntry
	if s.outboxDepth.Load() == 0 {
		if s.isClosed() {
			return nil, ErrClosed
		}
		return s.jq.peek(out, max), nil
	}
	// With both queues full (a backlog after an outage), give each half
	// of a batch, so neither waits for the other to drain.
	boltMax := max
	if n := s.jq.len(); n > 0 {
		boltMax = max - min(n, max/2)
	}
	err := s.View(func(tx *Tx) error {
		// bbolt's values live only as long as the transaction: copy them
		// into a few large chunks, which the entries then point into.
		var arena []byte
		c := tx.tx.Bucket(bOutbox).Cursor()
		s.ackedMu.Lock()
		defer s.ackedMu.Unlock()
		for k, v := c.First(); k != nil && len(out) < boltMax; k, v = c.Next() {
			if _, held := s.ackedBolt[binary.BigEndian.Uint64(k)]; held {
				continue
			}
			if out == nil {
				out = make([]OutboxEntry, 0, min(max, s.OutboxDepth()+16))
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
	return s.jq.peek(out, max), nil
}

// DeleteOutbox removes published entries (as PeekOutbox returned them).
func (s *Store) DeleteOutbox(ctx context.Context, entries []OutboxEntry) error {
	var seqs, jseqs []uint64
	for _, e := range entries {
		if e.journal {
			jseqs = append(jseqs, e.Seq)
		} else {
			seqs = append(seqs, e.Seq)
		}
	}
	// The journal's entries need no write: the next checkpoint records
	// how far JetStream has acknowledged.
	s.jq.remove(jseqs)
	if len(seqs) == 0 {
		return nil
	}
	if s.busSync.Load() != nil {
		// Deleted by the next checkpoint, after its bus sync.
		s.holdAcked(seqs)
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

// ExpireWebhookIDs deletes remembered webhook ids whose expiry is before
// now, at most max per call, and reports how many went.
func (s *Store) ExpireWebhookIDs(ctx context.Context, now time.Time, max int) (int, error) {
	return s.dropOldestSeen(ctx, u64(uint64(now.UnixNano())), max)
}

// WebhookIDCount is how many webhook ids are remembered.
func (s *Store) WebhookIDCount() int { return s.seen.len() }

// TrimWebhookIDs forgets the ids closest to their expiry until at most keep
// are remembered (at most max per call), and reports how many went. It
// bounds memory (about 40 bytes per id) when ids arrive faster than
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

func u64(v uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, v)
	return b
}

// SetBusSync sets the function that makes what the bus acknowledged so far
// durable on disk (bus.StreamSyncer). The store calls it before it forgets
// acknowledged events: before it deletes outbox entries, and before a
// checkpoint records how far the journal's events were acknowledged. Nil
// (the default, and for an external NATS) trusts the acknowledgement.
func (s *Store) SetBusSync(fn func() error) {
	if fn == nil {
		s.busSync.Store(nil)
		return
	}
	s.busSync.Store(&fn)
}

// syncBus runs the bus sync, if any, and logs when it starts or stops
// failing.
func (s *Store) syncBus() error {
	fn := s.busSync.Load()
	if fn == nil {
		return nil
	}
	t0 := time.Now()
	err := (*fn)()
	s.busSyncNs.Add(int64(time.Since(t0)))
	if err != nil {
		s.busSyncErrs.Add(1)
		err = fmt.Errorf("the bus acknowledged events it has not synced to disk: %w", err)
		s.busSyncErr.Store(&err)
		if !s.busSyncFailed.Swap(true) {
			s.log.Error("cannot sync the bus's files; acknowledged events stay in the journal and the outbox until it works", "err", err)
		}
		return err
	}
	s.busSyncs.Add(1)
	s.busSyncErr.Store(nil)
	if s.busSyncFailed.Swap(false) {
		s.log.Info("the bus's files sync again")
	}
	return nil
}

// BusSyncError is the last bus sync's failure, nil after a success (a
// readiness check: while it fails, acknowledged events pile up in the
// journal and the outbox).
func (s *Store) BusSyncError() error {
	if e := s.busSyncErr.Load(); e != nil {
		return *e
	}
	return nil
}

// holdAcked keeps acknowledged outbox entries until a checkpoint's bus
// sync covers them.
func (s *Store) holdAcked(seqs []uint64) {
	s.ackedMu.Lock()
	if s.ackedBolt == nil {
		s.ackedBolt = map[uint64]struct{}{}
	}
	for _, q := range seqs {
		s.ackedBolt[q] = struct{}{}
	}
	s.ackedMu.Unlock()
	select {
	case s.ckptKick <- struct{}{}:
	default:
	}
}

// heldAcked lists the held entries (a snapshot: the checkpoint deletes
// these after its sync, and entries held later wait for the next one).
func (s *Store) heldAcked() []uint64 {
	s.ackedMu.Lock()
	defer s.ackedMu.Unlock()
	if len(s.ackedBolt) == 0 {
		return nil
	}
	l := make([]uint64, 0, len(s.ackedBolt))
	for q := range s.ackedBolt {
		l = append(l, q)
	}
	slices.Sort(l)
	return l
}

func (s *Store) releaseAcked(seqs []uint64) {
	s.ackedMu.Lock()
	for _, q := range seqs {
		delete(s.ackedBolt, q)
	}
	s.ackedMu.Unlock()
}
