package state

import "time"

// Stats are counters of the store's write path since Open (for benchmarks
// and diagnostics).
type Stats struct {
	// Commits is the number of successful group commits, Updates the
	// number of Update functions they carried.
	Commits, Updates int64
	// PagesWritten is the number of page writes bbolt made, WriteTime the
	// time spent writing and syncing them.
	PagesWritten int64
	WriteTime    time.Duration
	// JournalBatches and JournalRecords count the journal's writes (one
	// pwrite and one fdatasync each) and the Accepts they carried;
	// JournalWriteTime is the time spent in them.
	JournalBatches, JournalRecords int64
	JournalWriteTime               time.Duration
	// BusSyncs and BusSyncErrors count the calls of the bus sync
	// (SetBusSync) that succeeded and failed; BusSyncTime is the time
	// spent in them.
	BusSyncs, BusSyncErrors int64
	BusSyncTime             time.Duration
}

// Stats reports the store's counters.
func (s *Store) Stats() Stats {
	ts := s.db.Stats().TxStats
	return Stats{
		Commits:      s.commit.commits.Load(),
		Updates:      s.commit.updates.Load(),
		PagesWritten: ts.GetWrite(),
		WriteTime:    ts.GetWriteTime(),

		JournalBatches:   s.acc.batches.Load(),
		JournalRecords:   s.acc.records.Load(),
		JournalWriteTime: time.Duration(s.acc.writeNs.Load()),

		BusSyncs:      s.out.busSyncs.Load(),
		BusSyncErrors: s.out.busSyncErrs.Load(),
		BusSyncTime:   time.Duration(s.out.busSyncNs.Load()),
	}
}
