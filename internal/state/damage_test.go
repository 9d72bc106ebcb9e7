package state

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// damaged makes a relay.db with records and a journal, closes it, and
// damages the file with fn.
func damaged(t *testing.T, fn func(t *testing.T, path string, size int64)) string {
	t.Helper()
	dir := t.TempDir()
	s, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if s.Created() != true {
		t.Fatal("a new relay.db is not Created")
	}
	for i := range 500 {
		if err := s.Update(context.Background(), func(tx *Tx) error {
			return tx.PutResource("vm", fmt.Sprintf("vm-%04d", i), strings.Repeat("x", 200))
		}); err != nil {
			t.Fatal(err)
		}
	}
	// Webhooks go through the journal: its segment stays after Close.
	for i := range 20 {
		if err := s.Accept(context.Background(), func(tx *AcceptTx) error {
			_, err := tx.SeenWebhook("r", fmt.Sprint("id", i), jNow, jNow.Add(time.Hour))
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, FileName)
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	fn(t, p, fi.Size())
	return dir
}

func garbage(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*131 + 7)
	}
	return b
}

func TestDamagedStateIsRefused(t *testing.T) {
	const restore = "relay.db is corrupt: restore it from a backup together with journal/ (bbolt: "
	const lost = "relay.db is missing or empty"
	tests := []struct {
		name   string
		damage func(t *testing.T, path string, size int64)
		want   []string
		is     error
	}{
		{"zero-length", func(t *testing.T, p string, _ int64) { must(t, os.Truncate(p, 0)) },
			[]string{lost, "journal has 1 segment(s)", "restore relay.db from a backup together with journal/", "move data_dir aside"}, ErrStateLost},
		{"missing", func(t *testing.T, p string, _ int64) { must(t, os.Remove(p)) },
			[]string{lost, "journal has 1 segment(s)"}, ErrStateLost},
		{"truncated to half", func(t *testing.T, p string, size int64) { must(t, os.Truncate(p, size/2)) },
			[]string{restore, "truncated"}, ErrCorrupt},
		{"truncated to 4 KiB", func(t *testing.T, p string, _ int64) { must(t, os.Truncate(p, 4096)) },
			[]string{restore}, ErrCorrupt},
		{"garbage root page", func(t *testing.T, p string, _ int64) {
			f, err := os.OpenFile(p, os.O_RDWR, 0)
			must(t, err)
			defer f.Close()
			// Both meta pages name the root bucket's page (at byte 32 of
			// a meta page); overwrite the pages they name.
			meta := make([]byte, 64)
			for _, off := range []int64{0, 4096} {
				_, err := f.ReadAt(meta, off)
				must(t, err)
				root := binary.LittleEndian.Uint64(meta[32:])
				_, err = f.WriteAt(garbage(4096), int64(root)*4096)
				must(t, err)
			}
		}, []string{restore}, ErrCorrupt},
		{"garbage meta pages", func(t *testing.T, p string, _ int64) {
			f, err := os.OpenFile(p, os.O_RDWR, 0)
			must(t, err)
			defer f.Close()
			_, err = f.WriteAt(garbage(8192), 0)
			must(t, err)
		}, []string{restore}, ErrCorrupt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := damaged(t, tt.damage)
			s, err := Open(Options{Dir: dir, LockTimeout: 100 * time.Millisecond})
			if err == nil {
				s.Close()
				t.Fatal("a damaged relay.db was opened")
			}
			t.Log(err)
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "writable") {
				t.Errorf("error %q blames permissions", err)
			}
			if !errors.Is(err, tt.is) {
				t.Errorf("error %v is not %v", err, tt.is)
			}
		})
	}
}

func TestEmptyRelayDBWithoutJournalStartsFresh(t *testing.T) {
	dir := t.TempDir()
	must(t, os.WriteFile(filepath.Join(dir, FileName), nil, 0o600))
	s := open(t, dir)
	if !s.Created() {
		t.Fatal("an empty relay.db with no journal is not Created")
	}
	s.Close()
	s2 := open(t, dir)
	if s2.Created() {
		t.Fatal("a reopened relay.db is Created")
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// After a failed journal sync (a full disk) the store takes webhooks again
// without a restart once a probe write succeeds: the checkpoint loop gives
// the accept loop a batch to probe on even when none arrives. Ready says
// so meanwhile.
func TestJournalRecoversWithoutARestart(t *testing.T) {
	dir := t.TempDir()
	full := errors.New("no space left on device")
	var failSync atomic.Bool
	s, err := Open(Options{Dir: dir, LockTimeout: 100 * time.Millisecond, CheckpointEvery: time.Millisecond,
		journalSync: func(f *os.File) error {
			if failSync.Load() {
				return full
			}
			return f.Sync()
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	s.acc.recoverEvery = 0 // probe at every batch
	accept(t, s, "before")
	failSync.Store(true)
	if err := s.Accept(context.Background(), func(tx *AcceptTx) error {
		_, err := tx.SeenWebhook("r", "refused", jNow, jNow.Add(time.Hour))
		return err
	}); !errors.Is(err, full) {
		t.Fatalf("Accept on a full disk: %v", err)
	}
	if err := s.Ready(); !errors.Is(err, full) || !strings.Contains(err.Error(), "once a probe write there succeeds") {
		t.Fatalf("Ready on a full disk: %v", err)
	}
	// Space freed; no webhook arrives (ingest refuses while unready), yet
	// the store becomes ready.
	failSync.Store(false)
	for deadline := time.Now().Add(5 * time.Second); s.Ready() != nil; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("still unready: %v", s.Ready())
		}
	}
	if !accept(t, s, "after") {
		t.Fatal("a new id after recovery is a duplicate")
	}
	if seenID(t, s, "refused") {
		t.Fatal("the refused id counts as seen")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	r := openJ(t, dir, 0)
	if !seenID(t, r, "before") || !seenID(t, r, "after") {
		t.Fatal("an acknowledged id was lost across the recovery and a restart")
	}
}
