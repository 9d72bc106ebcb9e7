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
	if b.srv == nil {
		return nil
	}
	js := b.srv.JetStreamConfig()
	if js == nil {
		return nil
	}
	return newStreamSync(filepath.Join(js.StoreDir, b.srv.GlobalAccount().GetName(), "streams", b.opts.Stream))
}

// streamSync fsyncs a stream directory's message blocks (msgs/<n>.blk).
// The server appends new messages to its last block, so only the blocks
// from the last one seen before onwards are looked at: a stream kept for
// days has thousands of blocks.
type streamSync struct {
	dir string

	mu sync.Mutex
	// synced is each recent block's size and modification time when it
	// was last synced; a block is synced again only when they change.
	// Blocks are append-only, so a write changes the size.
	synced map[string]fileSig
	// from is the index of the last block at the last sync.
	from  uint64
	files int // fsyncs done, for tests
}

type fileSig struct {
	size  int64
	mtime time.Time
}

func newStreamSync(dir string) *streamSync {
	return &streamSync{dir: dir, synced: map[string]fileSig{}}
}

func (s *streamSync) sync() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	msgs := filepath.Join(s.dir, "msgs")
	ents, err := os.ReadDir(msgs)
	if err != nil {
		return fmt.Errorf("sync the event stream's files: %w (check data_dir/jetstream is readable)", err)
	}
	seen := map[string]bool{}
	newFile := false
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
		newFile = newFile || !ok
		if err := fdatasyncPath(filepath.Join(msgs, name)); errors.Is(err, os.ErrNotExist) {
			continue
		} else if err != nil {
			return fmt.Errorf("sync the event stream's file %s: %w (check the disk under data_dir)", name, err)
		}
		s.files++
		s.synced[name] = sig
	}
	for name := range s.synced {
		if !seen[name] {
			delete(s.synced, name)
		}
	}
	s.from = last
	if newFile {
		// A new block's directory entry, so it is found after a crash.
		for _, d := range []string{msgs, s.dir} {
			if err := fsyncDir(d); err != nil {
				return fmt.Errorf("sync the event stream's directory %s: %w", d, err)
			}
		}
	}
	return nil
}

func fdatasyncPath(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	err = fdatasync(f)
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
