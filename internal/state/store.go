package state

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
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

// Store is the relay's state, composed of one part per concern, each with
// its own lock (see the package doc):
//   - commit: the bbolt group commit of Updates (this file);
//   - acc: the journal write path of Accepts (accept.go);
//   - ckpt: the checkpoint from the journal into bbolt (checkpoint.go);
//   - out: the outbox queue, its held acknowledgements and the bus sync
//     (outboxqueue.go);
//   - seen: the in-memory index of webhook ids (seen.go).
//
// It is safe for concurrent use.
type Store struct {
	db   *bolt.DB
	path string
	log  *slog.Logger
	// created: relay.db was missing or empty before Open (and no journal
	// was there either).
	created bool
	// queuedWatches counts watches queued (journaled or in the queue
	// bucket) and not yet folded into the watch list.
	queuedWatches atomic.Int64

	// closeMu guards closed; submit holds it for reading while it queues,
	// so Close never strands a request.
	closeMu sync.RWMutex
	closed  bool

	commit committer
	acc    acceptor
	ckpt   checkpointer
	out    outboxQueue
	seen   seenIndex
}

// committer is the bbolt group commit: the loop that gathers Updates into
// one transaction. Its channels and settings are fixed at Open; the
// counters are atomic.
type committer struct {
	reqs          chan *request
	stop, stopped chan struct{}
	maxBatch      int
	lingerFor     time.Duration
	lingerFill    int

	commits, updates atomic.Int64
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
	created, err := checkFile(opts.Dir, path, opts.LockTimeout)
	if err != nil {
		return nil, err
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:        opts.LockTimeout,
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
	})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, lockedError(path)
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w (check that data_dir is writable)", path, err)
	}
	s := &Store{
		db:      db,
		path:    path,
		log:     opts.Logger,
		created: created,
		commit: committer{
			reqs:       make(chan *request, opts.MaxBatch),
			stop:       make(chan struct{}),
			stopped:    make(chan struct{}),
			maxBatch:   opts.MaxBatch,
			lingerFor:  opts.LingerFor,
			lingerFill: opts.LingerFill,
		},
		acc: acceptor{
			reqs:         make(chan *acceptReq, opts.MaxBatch),
			stop:         make(chan struct{}),
			stopped:      make(chan struct{}),
			recoverEvery: recoverEvery,
		},
		ckpt: newCheckpointer(opts.CheckpointEvery),
	}
	s.out = newOutboxQueue(opts.Logger, s.ckpt.kick)
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
		s.out.depth.Store(int64(tx.Bucket(bOutbox).Stats().KeyN))
		s.queuedWatches.Store(int64(tx.Bucket(bWatchQueue).Stats().KeyN))
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

// QueuedWatches is how many watches ingest queued that the poller has not
// folded into its watch list yet (ApplyWatchQueue). Ingest stops queueing
// past poller.builds.max_watched, so a poller tick that runs long does not
// let the queue grow with every webhook.
func (s *Store) QueuedWatches() int { return int(s.queuedWatches.Load()) }

// Created reports whether this Open made relay.db (it was missing or
// empty). The app refuses to run a new relay.db beside a non-empty embedded
// stream (StateLostError).
func (s *Store) Created() bool { return s.created }

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
	close(s.acc.stop)
	<-s.acc.stopped
	close(s.ckpt.stop)
	<-s.ckpt.done
	close(s.commit.stop)
	<-s.commit.stopped
	cerr := s.checkpoint(func(fn func(*Tx) error) error {
		return s.db.Update(func(btx *bolt.Tx) error { return fn(&Tx{tx: btx, seen: &s.seen}) })
	})
	jerr := s.acc.j.Close()
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
	if e := s.acc.failed.Load(); e != nil {
		return *e
	}
	return nil
}

// Update runs fn in a read-write transaction shared with other concurrent
// callers, and returns once the transaction is durably committed (or fn's
// error). fn may run more than once; see the package doc.
func (s *Store) Update(ctx context.Context, fn func(*Tx) error) error {
	r := &request{fn: fn, done: make(chan error, 1)}
	if err := submit(s, ctx, s.commit.reqs, r); err != nil {
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
	c := &s.commit
	defer close(c.stopped)
	// Several writers are arriving: wait a moment for more, so one commit
	// (two fdatasyncs) serves more of them. A lone writer (the poller, one
	// request) never waits.
	batchLoop(c.reqs, c.stop, c.maxBatch, c.lingerFill, c.lingerFor, s.commitBatch)
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

// commitBatch runs the batch in one transaction. A function that fails is
// answered with its error and the rest are retried without it.
func (s *Store) commitBatch(batch []*request) {
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
			s.commit.commits.Add(1)
			s.commit.updates.Add(int64(len(batch)))
			s.out.committed(added)
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

func u64(v uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, v)
	return b
}
