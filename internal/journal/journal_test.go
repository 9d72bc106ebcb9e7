package journal

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cakework-relay/cakework-relay/internal/state/statetest"
)

// openT opens the journal in dir and closes it at the end of the test. It
// returns the bodies replayed past after.
func openT(t *testing.T, dir string, segBytes int64, after uint64) (*Journal, []string) {
	t.Helper()
	var bodies []string
	j, err := Open(Options{Dir: dir, SegmentBytes: segBytes, After: after}, func(seq uint64, body []byte) error {
		if seq > after {
			bodies = append(bodies, string(body))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { j.Close() })
	return j, bodies
}

// writeOne writes one record with body as its own batch, and returns its
// seq.
func writeOne(t *testing.T, j *Journal, body string) uint64 {
	t.Helper()
	seq := j.NextSeq()
	rec := append(make([]byte, HeaderSize), body...)
	Seal(rec, seq)
	if err := j.Write(rec, 1); err != nil {
		t.Fatal(err)
	}
	return seq
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// body is a record of about the size of a webhook's (an id, a watch and an
// event).
func body(n int) string { return fmt.Sprintf("b%d:%s", n, strings.Repeat("x", 120)) }

// A fresh journal starts a short preallocated segment, writes a full-size
// spare of zeros in the background once that is half full, and moves to it:
// fdatasyncs then overwrite written blocks. A short segment is never kept
// as the spare. (Moved from internal/state's accept tests, which drove it
// through Accept.)
func TestJournalMovesToAWrittenSpare(t *testing.T) {
	dir := filepath.Join(t.TempDir(), DirName)
	const seg = 64 << 10
	j, _ := openT(t, dir, seg, 0)
	spare := filepath.Join(dir, SpareName)
	n := 0
	var last uint64
	next := func() {
		last = writeOne(t, j, body(n))
		n++
	}
	next()
	first := j.cur.Path
	// (Without fallocate, off Linux, the file is only as long as its records.)
	if got := fileSize(t, first); j.segCap != seg/8 || got > seg/8 {
		t.Fatalf("first segment is %d bytes with room for %d, want %d (an eighth of the segment size)", got, j.segCap, seg/8)
	}
	for j.off <= seg/16 {
		next()
	}
	j.WaitSpare()
	data, err := os.ReadFile(spare)
	if err != nil {
		t.Fatalf("no spare once the first segment was half full: %v", err)
	}
	if len(data) != seg || strings.Trim(string(data), "\x00") != "" {
		t.Fatalf("spare is %d bytes (want %d) of which not all zeros", len(data), seg)
	}
	for j.cur.Path == first {
		next()
	}
	if got := fileSize(t, j.cur.Path); got != seg || j.segCap != seg {
		t.Fatalf("second segment is %d bytes with room for %d, want the %d-byte spare", got, j.segCap, seg)
	}
	if _, err := os.Stat(spare); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the spare is still there after the rotation (%v)", err)
	}
	// The short segment is released, and removed rather than kept.
	released := last
	j.Release(released)
	j.WaitSpare()
	if _, err := os.Stat(first); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("released first segment still there (%v)", err)
	}
	if fi, err := os.Stat(spare); err == nil && fi.Size() != seg {
		t.Fatalf("a %d-byte spare, want %d", fi.Size(), seg)
	}
	// Replay reads past the zeros of the spare's tail as the end.
	for range 5 {
		next()
	}
	_, got := openT(t, statetest.CrashCopy(t, dir), seg, released)
	if len(got) != 5 || got[4] != body(n-1) {
		t.Fatalf("after a crash %d records are past the released ones, want the 5 new ones", len(got))
	}
}

// Open ignores a spare left short or half written.
func TestOpenDropsAnUnfinishedSpare(t *testing.T) {
	dir := filepath.Join(t.TempDir(), DirName)
	const seg = 64 << 10
	j, _ := openT(t, dir, seg, 0)
	writeOne(t, j, "a")
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	spare := filepath.Join(dir, SpareName)
	for _, p := range []string{spare, spare + ".tmp"} {
		if err := os.WriteFile(p, []byte("short"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	r, got := openT(t, dir, seg, 0)
	if r.hasSpare {
		t.Fatal("a 5-byte spare.wal was taken as the spare")
	}
	for _, p := range []string{spare, spare + ".tmp"} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s is still there (%v)", filepath.Base(p), err)
		}
	}
	if len(got) != 1 || got[0] != "a" {
		t.Fatalf("replayed %q, want the one record", got)
	}
	if seq := writeOne(t, r, "b"); seq != 2 {
		t.Fatalf("the record after the restart has seq %d, want 2", seq)
	}
}

// A torn tail ends the replay; the next record takes the torn one's seq,
// and a later replay reads it.
func TestTornTailIsDroppedAndTheSeqReused(t *testing.T) {
	dir := filepath.Join(t.TempDir(), DirName)
	j, _ := openT(t, dir, 0, 0)
	for i := range 5 {
		writeOne(t, j, body(i))
	}
	cdir := statetest.CrashCopy(t, dir)
	segs, err := Segments(cdir)
	if err != nil || len(segs) != 1 {
		t.Fatalf("segments %v, %v", segs, err)
	}
	var end int64
	last, err := ReplaySegment(segs[0].Path, segs[0].First, func(_ uint64, b []byte) error {
		end += int64(HeaderSize + len(b))
		return nil
	})
	if err != nil || last != segs[0].First+4 {
		t.Fatalf("replay of the copy: last %d, %v", last, err)
	}
	if err := os.Truncate(segs[0].Path, end-3); err != nil {
		t.Fatal(err)
	}
	c, got := openT(t, cdir, 0, 0)
	if len(got) != 4 || got[3] != body(3) {
		t.Fatalf("after the torn write %d records replay, want 4", len(got))
	}
	if seq := writeOne(t, c, "again"); seq != 5 {
		t.Fatalf("the retry got seq %d, want the torn record's 5", seq)
	}
	_, got = openT(t, statetest.CrashCopy(t, cdir), 0, 0)
	if len(got) != 5 || got[4] != "again" {
		t.Fatalf("after the second crash %d records replay (last %q)", len(got), got[len(got)-1])
	}
}

// A failed sync fails the batch and every later write; the seq is not
// used.
func TestFailedSyncStopsTheJournal(t *testing.T) {
	dir := filepath.Join(t.TempDir(), DirName)
	boom := errors.New("EIO")
	fail := false
	j, err := Open(Options{Dir: dir, Sync: func(f *os.File) error {
		if fail {
			return boom
		}
		return f.Sync()
	}}, func(uint64, []byte) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	writeOne(t, j, "ok")
	fail = true
	rec := append(make([]byte, HeaderSize), "x"...)
	Seal(rec, j.NextSeq())
	if err := j.Write(rec, 1); !errors.Is(err, boom) || !errors.Is(j.Failed(), boom) {
		t.Fatalf("write with a failing sync: %v (failed %v)", err, j.Failed())
	}
	fail = false
	if err := j.Write(rec, 1); !errors.Is(err, boom) {
		t.Fatalf("write after a failed sync: %v, want refused", err)
	}
	if j.NextSeq() != 2 {
		t.Fatalf("next seq %d after the failure, want 2", j.NextSeq())
	}
}

// After a failed sync the journal writes again once a probe write and sync
// succeed: in a new segment, past the failed batch's seq, and a reopen
// replays every acknowledged record (and what of the failed batch reached
// the disk) without an overlap.
func TestRecoverAfterAFailedSync(t *testing.T) {
	dir := filepath.Join(t.TempDir(), DirName)
	boom := errors.New("ENOSPC")
	fail := false
	sync := func(f *os.File) error {
		if fail {
			return boom
		}
		return f.Sync()
	}
	j, err := Open(Options{Dir: dir, Sync: sync}, func(uint64, []byte) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	writeOne(t, j, "one")
	fail = true
	rec := append(make([]byte, HeaderSize), "refused"...)
	Seal(rec, j.NextSeq())
	if err := j.Write(rec, 1); !errors.Is(err, boom) {
		t.Fatal(err)
	}
	// Still full: the probe fails and the journal stays stopped.
	if err := j.Recover(); !errors.Is(err, boom) || j.Failed() == nil {
		t.Fatalf("Recover on a full disk: %v (failed %v)", err, j.Failed())
	}
	if _, err := os.Stat(filepath.Join(dir, "probe.tmp")); !os.IsNotExist(err) {
		t.Fatalf("probe file left behind: %v", err)
	}
	fail = false
	if err := j.Recover(); err != nil || j.Failed() != nil {
		t.Fatalf("Recover: %v (failed %v)", err, j.Failed())
	}
	if got := writeOne(t, j, "three"); got != 3 {
		t.Fatalf("first record after Recover has seq %d, want 3 (2 was the failed batch's)", got)
	}
	segs, err := Segments(dir)
	if err != nil || len(segs) != 2 {
		t.Fatalf("segments after Recover: %v %v, want the failed one and a new one", segs, err)
	}
	j.Close()
	var got []string
	j2, err := Open(Options{Dir: dir}, func(_ uint64, b []byte) error { got = append(got, string(b)); return nil })
	if err != nil {
		t.Fatal(err)
	}
	defer j2.Close()
	if strings.Join(got, ",") != "one,refused,three" {
		t.Fatalf("replayed %v", got)
	}
	if j2.NextSeq() != 4 {
		t.Fatalf("next seq %d after reopen", j2.NextSeq())
	}
}
