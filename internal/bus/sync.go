package bus

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The embedded JetStream answers a publish once the message is written to
// its block file, that is in the page cache, and fsyncs every two minutes.
// A relay that forgets an event once it is acknowledged (journal records,
// outbox entries) would lose it in a machine crash inside that window. So
// before it forgets, the relay calls the bus's syncer, which fdatasyncs
// the stream's block files that changed since the last call. An fsync
// works on the file, not the descriptor: it also flushes what the server
// wrote through its own.

// StreamSyncer makes what the event stream acknowledged so far durable on
// disk. It is nil for an external NATS: there the server's own settings
// (replicas, sync_interval) decide.
func (b *Bus) StreamSyncer() func() error {
	if s := b.streamSync(); s != nil {
		return s.sync
	}
	return nil
}

func (b *Bus) streamSync() *streamSync {
	srv := b.server()
	if srv == nil {
		return nil
	}
	js := srv.JetStreamConfig()
	if js == nil {
		return nil
	}
	// The path is the same for every server restartEmbedded starts.
	return newStreamSync(filepath.Join(js.StoreDir, srv.GlobalAccount().GetName(), "streams", b.opts.Stream))
}

// streamSync fsyncs a stream directory's message blocks (msgs/<n>.blk).
// The server appends new messages to its last block, so only the blocks
// from the last one seen before onwards are looked at: a stream kept for
// days has thousands of blocks.
type streamSync struct {
	dir string
	// fsync is fdatasync and dirSync fsyncs a directory; tests wrap them.
	fsync   func(*os.File) error
	dirSync func(string) error

	mu sync.Mutex
	// synced is each recent block's size and modification time when it
	// was last synced; a block is synced again only when either changes.
	synced map[string]fileSig
	// from is the index of the last block at the last sync.
	from uint64
	// dirDirty: a block was created since the directories were last
	// synced (kept across a failed directory sync, so it is retried).
	dirDirty bool
	// broken is the first failed fdatasync. After one, Linux may report
	// success for data it failed to write, so no later sync is trusted.
	broken error
	files  int // fdatasyncs done, for tests
}

type fileSig struct {
	size  int64
	mtime time.Time
}

func newStreamSync(dir string) *streamSync {
	// The directories are synced on the first call: the relay may have
	// crashed before they were.
	return &streamSync{dir: dir, fsync: fdatasync, dirSync: fsyncDir, synced: map[string]fileSig{}, dirDirty: true}
}

func (s *streamSync) sync() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.broken != nil {
		return s.broken
	}
	msgs := filepath.Join(s.dir, "msgs")
	ents, err := os.ReadDir(msgs)
	if err != nil {
		return fmt.Errorf("sync the event stream's files: %w (check data_dir/jetstream is readable)", err)
	}
	seen := map[string]bool{}
	last := s.from
	for _, e := range ents {
		name := e.Name()
		idx, err := strconv.ParseUint(strings.TrimSuffix(name, ".blk"), 10, 64)
		if err != nil || !strings.HasSuffix(name, ".blk") || idx < s.from {
			continue
		}
		last = max(last, idx)
		seen[name] = true
		fi, err := e.Info()
		if errors.Is(err, os.ErrNotExist) {
			continue // removed by the server (aged out, compacted)
		}
		if err != nil {
			return fmt.Errorf("sync the event stream's files: %w", err)
		}
		sig := fileSig{size: fi.Size(), mtime: fi.ModTime()}
		old, ok := s.synced[name]
		if ok && old == sig {
			continue
		}
		if err := s.fsyncPath(filepath.Join(msgs, name)); errors.Is(err, os.ErrNotExist) {
			continue
		} else if err != nil {
			s.broken = fmt.Errorf("fdatasync of the event stream's file %s failed: %w; the disk under data_dir lost writes, so the relay keeps every event JetStream acknowledged since and trusts no later sync: fix the disk and restart the relay", name, err)
			return s.broken
		}
		s.files++
		s.synced[name] = sig
		s.dirDirty = s.dirDirty || !ok
	}
	for name := range s.synced {
		if !seen[name] {
			delete(s.synced, name)
		}
	}
	if s.dirDirty {
		// New blocks' directory entries, so they are found after a crash.
		for _, d := range []string{msgs, s.dir} {
			if err := s.dirSync(d); err != nil {
				return fmt.Errorf("sync the event stream's directory %s: %w (check the disk under data_dir)", d, err)
			}
		}
		s.dirDirty = false
	}
	s.from = last
	return nil
}

func (s *streamSync) fsyncPath(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	err = s.fsync(f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func fsyncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
