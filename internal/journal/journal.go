package journal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

const (
	// DirName is the journal's directory in data_dir.
	DirName = "journal"
	// SpareName is the spare segment's file name (see the package doc).
	SpareName = "spare.wal"
	// HeaderSize is the size of a record's header: the room to leave
	// before a body for Seal.
	HeaderSize = 4 + 4 + 8

	segmentExt = ".wal"
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// Segment is one segment file and the records found in it.
type Segment struct {
	Path        string
	First, Last uint64 // Last < First: no record
}

// Journal is the file side. Write runs on one goroutine at a time (the
// caller's batch loop, after Open); Release may run on another.
type Journal struct {
	dir     string
	segSize int64

	// Written by Write only.
	f       *os.File
	cur     Segment
	off     int64
	nextSeq uint64
	failed  error // a write or sync failed: no more writes until Recover
	failedN int   // records in the batch that failed
	sync    func(*os.File) error
	segCap  int64 // the current segment's size: segSize, or less (see startSegment)
	kicked  bool  // prepareSpare was called for the current segment

	mu        sync.Mutex // closed, hasSpare, preparing: Release runs on the caller's checkpoint goroutine
	closed    []Segment  // full segments still needed, oldest first
	hasSpare  bool       // spare.wal is there: segSize bytes, all written
	preparing bool       // prepareSpare is writing one
	prepWG    sync.WaitGroup
	prepStop  atomic.Bool // Close: stop writing a spare
}

// Options configure Open.
type Options struct {
	// Dir is the journal's directory (data_dir/journal), created if
	// missing.
	Dir string
	// SegmentBytes is the size of a segment. Default 32 MiB.
	SegmentBytes int64
	// After is the highest seq the caller knows was used (its watermarks):
	// new records get seqs past it, and past every record replayed, even
	// when every segment was recycled.
	After uint64
	// Sync makes a segment's writes durable. Default fdatasync; tests make
	// it fail.
	Sync func(*os.File) error
}

func segmentName(first uint64) string { return fmt.Sprintf("%020d%s", first, segmentExt) }

// Segments returns the segment files in dir in seq order, each with
// Last = First-1 (their records are not read).
func Segments(dir string) ([]Segment, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var segs []Segment
	for _, e := range ents {
		name := e.Name()
		base, ok := strings.CutSuffix(name, segmentExt)
		if !ok || name == SpareName {
			continue
		}
		first, err := strconv.ParseUint(base, 10, 64)
		if err != nil {
			continue
		}
		segs = append(segs, Segment{Path: filepath.Join(dir, name), First: first, Last: first - 1})
	}
	slices.SortFunc(segs, func(a, b Segment) int {
		switch {
		case a.First < b.First:
			return -1
		case a.First > b.First:
			return 1
		}
		return 0
	})
	return segs, nil
}

// ReplaySegment calls fn for each valid record of the segment, in order,
// and returns the seq of the last one (first-1 when there is none). It
// stops at a torn tail (see the package doc). body points into the
// segment's contents, read whole, and may be kept.
func ReplaySegment(path string, first uint64, fn func(seq uint64, body []byte) error) (uint64, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return first - 1, err
	}
	want := first
	for off := 0; len(data)-off >= HeaderSize; {
		n := int(binary.LittleEndian.Uint32(data[off:]))
		sum := binary.LittleEndian.Uint32(data[off+4:])
		if n < 8 || n > len(data)-off-8 {
			break
		}
		rec := data[off+8 : off+8+n]
		if crc32.Checksum(rec, crcTable) != sum || binary.LittleEndian.Uint64(rec) != want {
			break
		}
		if err := fn(want, rec[8:]); err != nil {
			return want - 1, err
		}
		want++
		off += 8 + n
	}
	return want - 1, nil
}

// Seal fills in the header of a record: rec is HeaderSize bytes of room
// followed by the body.
func Seal(rec []byte, seq uint64) {
	binary.LittleEndian.PutUint32(rec, uint32(len(rec)-8))
	binary.LittleEndian.PutUint64(rec[8:], seq)
	binary.LittleEndian.PutUint32(rec[4:], crc32.Checksum(rec[8:], crcTable))
}

// Open replays the segments in dir, oldest first, calling replay for each
// valid record (a record of a segment not yet released may come again:
// the caller skips what its watermarks cover), removes segments with no
// record and an unfinished spare, and returns the journal ready to write
// past the last record and past o.After. It writes no segment until the
// first Write.
func Open(o Options, replay func(seq uint64, body []byte) error) (*Journal, error) {
	if o.SegmentBytes <= 0 {
		o.SegmentBytes = 32 << 20
	}
	if o.Sync == nil {
		o.Sync = datasync
	}
	dir := o.Dir
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return nil, fmt.Errorf("create %s: %w (set data_dir to a writable directory)", dir, err)
		}
		if err := syncDir(filepath.Dir(dir)); err != nil {
			return nil, err
		}
	}
	segs, err := Segments(dir)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", dir, err)
	}
	last := o.After
	kept := segs[:0]
	for _, seg := range segs {
		if len(kept) > 0 && seg.First <= kept[len(kept)-1].Last {
			return nil, fmt.Errorf("journal segment %s overlaps the one before it; move data_dir/%s aside to start without it (its unpublished events are then lost)", seg.Path, DirName)
		}
		seg.Last, err = ReplaySegment(seg.Path, seg.First, replay)
		if err != nil {
			return nil, fmt.Errorf("replay journal segment %s: %w; move it aside to start without it (its unpublished events are then lost)", seg.Path, err)
		}
		if seg.Last < seg.First {
			_ = os.Remove(seg.Path)
			continue
		}
		last = max(last, seg.Last)
		kept = append(kept, seg)
	}
	// A spare is used only at full size (an interrupted preparation leaves
	// a .tmp file, removed here).
	spare := filepath.Join(dir, SpareName)
	fi, err := os.Stat(spare)
	hasSpare := err == nil && fi.Size() >= o.SegmentBytes
	if err == nil && !hasSpare {
		_ = os.Remove(spare)
	}
	_ = os.Remove(spare + ".tmp")
	return &Journal{dir: dir, segSize: o.SegmentBytes, nextSeq: last + 1, closed: slices.Clone(kept), hasSpare: hasSpare, sync: o.Sync}, nil
}

// NextSeq is the seq the next record written gets.
func (j *Journal) NextSeq() uint64 { return j.nextSeq }

// Failed is the write or sync failure that stopped the journal, or nil.
func (j *Journal) Failed() error { return j.failed }

// WaitSpare waits for a spare being written in the background, if any
// (tests wait for it before they count files).
func (j *Journal) WaitSpare() { j.prepWG.Wait() }

// startSegment opens a new segment whose first record is j.nextSeq: the
// spare file renamed, or, when there is none ready, a new preallocated file
// of an eighth of the segment size. Once a segment is half full, a spare is
// prepared in the background if there is none (so a relay that takes a few
// webhooks never writes one). A spare's blocks are all written, so an
// fdatasync after a record overwrites data in place; in a preallocated file
// each fdatasync also commits the file system's conversion of the blocks it
// wrote (see the figures above).
func (j *Journal) startSegment() error {
	name := filepath.Join(j.dir, segmentName(j.nextSeq))
	var f *os.File
	var err error
	j.mu.Lock()
	if j.hasSpare {
		j.hasSpare = false
		if err = os.Rename(filepath.Join(j.dir, SpareName), name); err == nil {
			f, err = os.OpenFile(name, os.O_RDWR, 0o600)
		}
	}
	j.mu.Unlock()
	j.segCap = j.segSize
	if f == nil {
		f, err = os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
		if err == nil {
			// Not every file system can preallocate; writes then extend
			// the file, which is correct but syncs slower.
			j.segCap = max(j.segSize/8, 4<<10)
			preallocate(f, j.segCap)
		}
	}
	if err != nil {
		return fmt.Errorf("journal: create segment %s: %w (check that data_dir is writable and not full)", name, err)
	}
	if err := syncDir(j.dir); err != nil {
		f.Close()
		return err
	}
	j.f, j.off = f, 0
	j.cur = Segment{Path: name, First: j.nextSeq, Last: j.nextSeq - 1}
	j.kicked = false
	return nil
}

// prepareSpare starts writing a spare in the background unless there is
// one or one is being written. A failure leaves none: the next segment is
// then preallocated instead.
func (j *Journal) prepareSpare() {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.hasSpare || j.preparing {
		return
	}
	j.preparing = true
	j.prepWG.Add(1)
	go func() {
		defer j.prepWG.Done()
		tmp := filepath.Join(j.dir, SpareName+".tmp")
		err := writeZeros(tmp, j.segSize, &j.prepStop)
		j.mu.Lock()
		defer j.mu.Unlock()
		j.preparing = false
		if err == nil && !j.hasSpare {
			if err = os.Rename(tmp, filepath.Join(j.dir, SpareName)); err == nil {
				j.hasSpare = true
				return
			}
		}
		_ = os.Remove(tmp)
	}()
}

// writeZeros creates path with size bytes of zeros, written and synced,
// unless stop is set first.
func writeZeros(path string, size int64, stop *atomic.Bool) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	zeros := make([]byte, min(size, 1<<20))
	for off := int64(0); off < size && err == nil; off += int64(len(zeros)) {
		if stop.Load() {
			err = errors.New("journal closed")
			break
		}
		_, err = f.WriteAt(zeros[:min(int64(len(zeros)), size-off)], off)
	}
	if err == nil {
		err = datasync(f)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// Write appends a batch of n records, each encoded by Seal with the seqs
// NextSeq onwards, and makes them durable. A failed write or sync fails
// every later Write (see the package doc).
func (j *Journal) Write(buf []byte, n int) error {
	if j.failed != nil {
		return j.failed
	}
	if j.f == nil || (j.off > 0 && j.off+int64(len(buf)) > j.segCap) {
		// Creating a segment changes nothing on disk that replay reads
		// until records are written, so a failure here can be retried.
		if err := j.rotate(); err != nil {
			return err
		}
	}
	first := j.nextSeq
	if _, err := j.f.WriteAt(buf, j.off); err != nil {
		j.failed, j.failedN = fmt.Errorf("journal: write %s failed (%w); the relay takes webhooks again once a probe write there succeeds, or restart it once the disk is fixed (nothing is lost: the batch was refused)", j.cur.Path, err), n
		return j.failed
	}
	if err := j.sync(j.f); err != nil {
		j.failed, j.failedN = fmt.Errorf("journal: sync %s failed (%w); the relay takes webhooks again once a probe write there succeeds, or restart it once the disk is fixed (nothing is lost: the batch was refused)", j.cur.Path, err), n
		return j.failed
	}
	j.nextSeq += uint64(n)
	j.off += int64(len(buf))
	j.cur.Last = first + uint64(n) - 1
	if !j.kicked && j.off > j.segCap/2 {
		j.kicked = true
		j.prepareSpare()
	}
	return nil
}

// ProbeBytes is what Recover writes and syncs before the journal writes
// again.
const ProbeBytes = 1 << 20

// Recover, after a failed write or sync, lets the journal write again once
// a probe file of ProbeBytes in its directory is written and synced. The
// failed segment is never written or synced again (its tail is unknown,
// and a later sync of it could report lost pages as good): it is kept, as
// full, for its earlier records, and the next Write starts a new segment.
// The failed batch's seqs are skipped, so whatever of it reached the disk
// is never confused with a later record (a restart replays it, as it
// would have without Recover). Like Write, it runs on the writer's
// goroutine. nil when the journal had not failed.
func (j *Journal) Recover() error {
	if j.failed == nil {
		return nil
	}
	p := filepath.Join(j.dir, "probe.tmp")
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err == nil {
		_, err = f.Write(make([]byte, ProbeBytes))
		if err == nil {
			err = j.sync(f)
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	_ = os.Remove(p)
	if err != nil {
		return fmt.Errorf("journal: probe write in %s: %w", j.dir, err)
	}
	// A segment without an acknowledged record is left for Open, which
	// replays what of the failed batch reached it and removes it if none.
	j.closeSegment(false)
	j.nextSeq += uint64(j.failedN)
	j.failed, j.failedN = nil, 0
	return nil
}

// rotate closes the current segment (kept until released) and starts the
// next one.
func (j *Journal) rotate() error {
	j.closeSegment(true)
	return j.startSegment()
}

// closeSegment closes the current segment, if any: one with records is
// kept until released, an empty one removed when removeEmpty.
func (j *Journal) closeSegment(removeEmpty bool) {
	if j.f == nil {
		return
	}
	j.f.Close()
	j.f = nil
	if j.cur.Last >= j.cur.First {
		j.mu.Lock()
		j.closed = append(j.closed, j.cur)
		j.mu.Unlock()
	} else if removeEmpty {
		_ = os.Remove(j.cur.Path)
	}
}

// Release drops the closed segments whose records are all at or below
// upTo: the first becomes the spare (if there is none), the rest are
// removed. The current segment is kept.
func (j *Journal) Release(upTo uint64) {
	j.mu.Lock()
	defer j.mu.Unlock()
	for len(j.closed) > 0 && j.closed[0].Last <= upTo {
		seg := j.closed[0]
		j.closed = j.closed[1:]
		// Only a full-size segment makes a spare (not a short first one).
		if fi, err := os.Stat(seg.Path); !j.hasSpare && err == nil && fi.Size() >= j.segSize &&
			os.Rename(seg.Path, filepath.Join(j.dir, SpareName)) == nil {
			j.hasSpare = true
			continue
		}
		_ = os.Remove(seg.Path)
	}
}

// Close closes the current segment (removed if it holds no record) and
// stops writing a spare.
func (j *Journal) Close() error {
	// A spare half written is removed; the next start writes one again.
	j.prepStop.Store(true)
	j.prepWG.Wait()
	if j.f == nil {
		return nil
	}
	err := j.f.Close()
	j.f = nil
	if j.cur.Last < j.cur.First {
		_ = os.Remove(j.cur.Path)
	}
	return err
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("journal: open %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("journal: sync %s: %w", dir, err)
	}
	return nil
}
