package state

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/cakework-relay/cakework-relay/internal/journal"
)

// ErrStateLost is wrapped by Open's error when relay.db is missing or empty
// beside a journal, and by the app's when it is new beside a non-empty
// stream: the relay's record of what it published is gone, and starting
// fresh would publish it all again.
var ErrStateLost = errors.New("relay.db is missing or empty")

// ErrCorrupt is wrapped by Open's error when relay.db does not read back.
var ErrCorrupt = errors.New("relay.db is corrupt")

// corrupt is the sentence for a relay.db that does not read back.
func corrupt(path string, err error) error {
	return fmt.Errorf("open %s: %w: restore it from a backup together with journal/ (bbolt: %v)", path, ErrCorrupt, err)
}

// StateLostError is the sentence for state that is gone while what it
// recorded is still there (what names it: the journal, the stream).
func StateLostError(path, what string) error {
	return fmt.Errorf("%w (%s) but %s: the relay's record of what it received and published is gone, and starting fresh would publish it again; "+
		"restore relay.db from a backup together with journal/, or, to start over on purpose, move data_dir aside", ErrStateLost, path, what)
}

// checkFile runs before the writable open. It refuses a missing or empty
// relay.db beside journal segments, and a relay.db that does not read
// back: it opens it read-only (which skips bbolt's free-page scan, whose
// panics happen on a goroutine of bbolt's own and cannot be recovered) and
// reads every page the buckets reach, turning bbolt's panics and faults on
// a damaged page into ErrCorrupt. It reports whether the file is new.
func checkFile(dir, path string, lockTimeout time.Duration) (created bool, err error) {
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist) || (err == nil && fi.Size() == 0):
		segs, serr := journal.Segments(filepath.Join(dir, journal.DirName))
		if serr != nil && !errors.Is(serr, fs.ErrNotExist) {
			return false, fmt.Errorf("read %s: %w", filepath.Join(dir, journal.DirName), serr)
		}
		if len(segs) > 0 {
			return false, StateLostError(path, fmt.Sprintf("%s has %d segment(s)", filepath.Join(dir, journal.DirName), len(segs)))
		}
		return true, nil
	case err != nil:
		return false, fmt.Errorf("open %s: %w (check that data_dir is readable and writable)", path, err)
	}
	return false, verify(path, fi.Size(), lockTimeout)
}

func verify(path string, size int64, lockTimeout time.Duration) (err error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: lockTimeout})
	switch {
	case errors.Is(err, bolterrors.ErrTimeout):
		return lockedError(path)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("open %s: %w (check that data_dir is readable and writable)", path, err)
	case err != nil:
		return corrupt(path, err)
	}
	defer db.Close()
	// A damaged page makes bbolt panic, and a page past a truncated end
	// faults; both become an error here.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			err = corrupt(path, fmt.Errorf("%v", p))
		}
	}()
	return db.View(func(tx *bolt.Tx) error {
		if need := tx.Size(); size < need {
			return corrupt(path, fmt.Errorf("the file is %d bytes but its pages span %d: it was truncated", size, need))
		}
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error { return walk(b) })
	})
}

// walk reads every key of b and its nested buckets, so every page they
// reach is checked.
func walk(b *bolt.Bucket) error {
	return b.ForEach(func(k, v []byte) error {
		if v == nil {
			if nb := b.Bucket(k); nb != nil {
				return walk(nb)
			}
		}
		return nil
	})
}

func lockedError(path string) error {
	return fmt.Errorf("open %s: the file is locked by another process (is another relay using data_dir %s?); stop it or set a different data_dir", path, filepath.Dir(path))
}
