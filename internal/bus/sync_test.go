package bus

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The syncer must fsync the block file the server wrote the acknowledged
// message to, and only blocks that changed since its last call.
func TestStreamSyncerSyncsTheBlockWithTheMessage(t *testing.T) {
	b := openEmbedded(t, "")
	ctx := context.Background()
	s := b.streamSync()
	if s == nil {
		t.Fatal("no syncer for the embedded server")
	}
	var fsynced []string
	s.fsync = func(f *os.File) error {
		fsynced = append(fsynced, filepath.Base(f.Name()))
		return fdatasync(f)
	}
	if err := s.sync(); err != nil {
		t.Fatal(err)
	}
	before := s.files
	payload := []byte(`{"marker":"sync-test-7f3a"}`)
	if _, err := b.Publish(ctx, "cakework.build.b1.succeeded", "id-1", payload, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.sync(); err != nil {
		t.Fatal(err)
	}
	if s.files != before+1 {
		t.Fatalf("synced %d files after one publish, want 1", s.files-before)
	}
	// The synced block holds the message, at the size the syncer recorded.
	found := false
	for name, sig := range s.synced {
		data, err := os.ReadFile(filepath.Join(s.dir, "msgs", name))
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(data, payload) {
			found = true
			if !slices.Contains(fsynced, name) {
				t.Errorf("%s holds the message but was not fdatasynced (fdatasynced: %v)", name, fsynced)
			}
			if int64(len(data)) != sig.size {
				t.Errorf("%s: synced at %d bytes, now %d", name, sig.size, len(data))
			}
		}
	}
	if !found {
		t.Fatalf("no synced block holds the message (synced: %v)", s.synced)
	}
	// Nothing new: nothing to sync.
	n := s.files
	if err := s.sync(); err != nil {
		t.Fatal(err)
	}
	if s.files != n {
		t.Errorf("synced %d unchanged files", s.files-n)
	}
	for i := range 3 {
		if _, err := b.Publish(ctx, "cakework.build.b1.log", fmt.Sprintf("id-%d", i+2), payload, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.sync(); err != nil {
		t.Fatal(err)
	}
	if s.files != n+1 {
		t.Errorf("synced %d files after three publishes to one block, want 1", s.files-n)
	}
}

func TestStreamSyncerExternalIsNil(t *testing.T) {
	if f := (&Bus{}).StreamSyncer(); f != nil {
		t.Fatal("an external bus has a syncer")
	}
}

func TestStreamSyncerMissingDirIsAnError(t *testing.T) {
	err := newStreamSync(filepath.Join(t.TempDir(), "gone")).sync()
	if err == nil {
		t.Fatal("no error for a missing stream directory")
	}
}

// Only the blocks from the last one seen onwards are synced: the server
// appends to its last block and starts new ones after it.
func TestStreamSyncerLooksAtTheLastBlocksOnly(t *testing.T) {
	dir, write := fakeStream(t)
	write("1.blk", "a")
	write("2.blk", "b")
	write("index.db", "x")
	s := newStreamSync(dir)
	if err := s.sync(); err != nil {
		t.Fatal(err)
	}
	if s.files != 2 {
		t.Fatalf("first sync: %d files, want 2 (1.blk, 2.blk)", s.files)
	}
	write("1.blk", "a") // an old block: not where new messages go
	write("2.blk", "b")
	write("3.blk", "c")
	write("10.blk", "d")
	if err := s.sync(); err != nil {
		t.Fatal(err)
	}
	if s.files != 5 {
		t.Fatalf("second sync: %d more files, want 3 (2.blk, 3.blk, 10.blk)", s.files-2)
	}
	if _, ok := s.synced["1.blk"]; ok {
		t.Error("1.blk is still tracked")
	}
	if s.from != 10 {
		t.Errorf("from = %d, want 10", s.from)
	}
	if err := s.sync(); err != nil || s.files != 5 {
		t.Fatalf("third sync with nothing new: %d more files, %v", s.files-5, err)
	}
}

// A failed directory sync is retried on the next call, even though the
// new block itself was synced.
func TestStreamSyncerRetriesAFailedDirectorySync(t *testing.T) {
	dir, write := fakeStream(t)
	s := newStreamSync(dir)
	if err := s.sync(); err != nil {
		t.Fatal(err)
	}
	write("1.blk", "a")
	dirSyncs := 0
	s.dirSync = func(string) error { dirSyncs++; return errors.New("EIO") }
	if err := s.sync(); err == nil {
		t.Fatal("a failed directory sync was not reported")
	}
	s.dirSync = func(d string) error { dirSyncs++; return fsyncDir(d) }
	dirSyncs = 0
	if err := s.sync(); err != nil {
		t.Fatal(err)
	}
	if dirSyncs == 0 {
		t.Fatal("the directories were not synced again after the failure")
	}
}

// After a failed fdatasync no later sync is trusted (Linux can report
// success for pages whose write failed).
func TestStreamSyncerStaysBrokenAfterAFailedFdatasync(t *testing.T) {
	dir, write := fakeStream(t)
	write("1.blk", "a")
	s := newStreamSync(dir)
	s.fsync = func(*os.File) error { return errors.New("EIO") }
	if err := s.sync(); err == nil {
		t.Fatal("a failed fdatasync was not reported")
	}
	s.fsync = fdatasync
	err := s.sync()
	if err == nil {
		t.Fatal("a sync after a failed fdatasync reported success")
	}
	if !strings.Contains(err.Error(), "restart the relay") {
		t.Errorf("the error does not say what to do: %v", err)
	}
}

// fakeStream is a stream directory with an empty msgs/, and a func that
// appends to a file in it.
func fakeStream(t *testing.T) (string, func(name, data string)) {
	t.Helper()
	dir := t.TempDir()
	msgs := filepath.Join(dir, "msgs")
	if err := os.MkdirAll(msgs, 0o750); err != nil {
		t.Fatal(err)
	}
	return dir, func(name, data string) {
		f, err := os.OpenFile(filepath.Join(msgs, name), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteString(data); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
}
