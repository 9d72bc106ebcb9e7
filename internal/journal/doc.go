// Package journal is a write-ahead log of numbered records: the webhook hot
// path's durable write (internal/state's Accept). A batch of records is
// written with one pwrite and made durable with one fdatasync, against a
// bbolt commit's two fdatasyncs and a pwrite per page. The journal knows
// nothing of what the records mean: the caller encodes their bodies,
// replays them at Open, and tells the journal with Release which records it
// no longer needs.
//
// # Format
//
// The journal is a directory (data_dir/journal) of segment files named
// <seq of the first record, 20 digits>.wal, each a run of records:
//
//	u32 length of what follows the checksum (seq and body), little-endian
//	u32 CRC-32C of seq and body
//	u64 seq, one more than the record before it
//	body
//
// Seqs increase across segments and are never used twice, also after every
// segment was recycled: Open continues past the last record it finds and
// past Options.After, which the caller keeps (internal/state keeps its
// checkpoint watermarks in bbolt).
//
// # Torn tails
//
// Replay reads each segment from its start and stops at the first record
// that is short, fails its checksum or does not carry the expected seq: a
// torn write at the crash point, the zeros of a preallocated tail, or a
// recycled file's old records (their seqs are lower). Only the end of a
// segment can be torn, because Write returns (and the caller acknowledges a
// batch) only after the fdatasync; what was torn was never acknowledged,
// and the next record written gets the torn one's seq. A segment whose
// first record overlaps the one before it is refused, with advice.
//
// A batch whose write or sync failed is answered with the error, and the
// journal takes no more writes until Recover's probe (a 1 MiB file written
// and synced in the directory) succeeds, or the relay restarts. The failed
// segment is never written or synced again (after a failed fdatasync the
// kernel may have dropped the pages, and the file's tail is unknown; Linux
// may report later syncs as good for writes that were lost): writing goes
// on in a new segment, past the failed batch's seqs. The next Open replays
// whatever of the failed batch reached the disk, and continues past it, so
// no seq is used twice.
//
// # Recycling and spare segments
//
// A segment, once Release covers all its records, is recycled as the next
// one (spare.wal), so a steady write overwrites blocks the file already
// has and the fdatasync does not wait for an extent or size change; further
// released segments are removed. Without a spare (a fresh start, or
// segments held by an outage) a short preallocated segment (an eighth of
// the segment size) is used while a spare of zeros is written in the
// background once it is half full: an fdatasync into preallocated blocks
// commits their conversion too (here 0.37-0.43 ms and 115 µs of CPU against
// 0.28-0.31 ms and 86 µs when overwriting). Only a full-size segment
// becomes the spare. Open removes a spare left short and a half-written
// spare.wal.tmp.
//
// # Concurrency
//
// Write (and Open) run on one goroutine at a time: the caller's batch loop.
// Release may run on another (the checkpoint), concurrently with Write;
// the segment lists it shares with Write have their own lock.
package journal
