package state

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/cakework-relay/cakework-relay/internal/journal"
)

// Accept is the webhook hot path's commit: the dedup check, the seen ids,
// the queued poller watches and the outbox entries of one request, made
// durable in the journal (package internal/journal) instead of a bbolt
// commit.
//
// A request's changes are one journal record. Concurrent Accepts share a
// batch: one goroutine runs their functions in turn (a later function sees
// the ids an earlier one recorded, so two requests with one id cannot both
// pass), writes the batch's records with one pwrite, fdatasyncs once, and
// only then answers them, adds their ids to the in-memory seen index and
// their events to the in-memory outbox queue the publisher reads. A
// function that fails is answered with its error and leaves nothing.
//
// A checkpoint (every CheckpointEvery, and before the poller reads the
// watch queue) writes the records' seen ids and watches into bbolt, where
// Updates put them, in one transaction, with two watermarks in the meta
// bucket: the last record checkpointed, and the last record whose events
// JetStream acknowledged. A segment whose records are all under both is
// recycled. Open replays what is over them: seen ids and watches into
// bbolt, unacknowledged events back into the outbox queue. An event
// acknowledged after the last checkpoint is found on the stream by the
// outbox publisher after a crash and not published again (package outbox,
// checkStored), as for an outbox entry not yet deleted after its
// acknowledgement.

// AcceptTx is one request's view in an Accept batch.
type AcceptTx struct {
	s *Store
	// batch holds the ids recorded by earlier functions of the batch, and
	// batchEv the events of those recorded with one.
	batch   map[seenHash]int64
	batchEv map[seenHash]eventRef
	seen    []jSeen
	watches [][]byte
	out     []jOut
}

type jSeen struct {
	h    seenHash
	exp  int64
	ikey []byte   // the expiry index key
	ev   eventRef // the event published for it, if recorded
}

type jOut struct {
	subject, msgID string
	payload        []byte
}

// SeenWebhook records a delivery id for receiver until expires, and reports
// true (recording nothing) when it is already remembered and unexpired.
func (t *AcceptTx) SeenWebhook(receiver, id string, now, expires time.Time) (bool, error) {
	return t.seenWebhook(receiver, id, eventRef{}, now, expires)
}

// SeenWebhookEvent is SeenWebhook for a delivery whose event id is not
// derived from the delivery id: it keeps eventID (an event.ID) with the
// delivery id, for WebhookEvent to answer a repeat with.
func (t *AcceptTx) SeenWebhookEvent(receiver, id, eventID string, now, expires time.Time) (bool, error) {
	return t.seenWebhook(receiver, id, refOf(eventID), now, expires)
}

func (t *AcceptTx) seenWebhook(receiver, id string, ev eventRef, now, expires time.Time) (bool, error) {
	k := key(receiver, id)
	h := hashSeen(k)
	if e, _ := t.lookup(h, false); e > now.UnixNano() {
		return true, nil
	}
	exp := expires.UnixNano()
	t.seen = append(t.seen, jSeen{h: h, exp: exp, ikey: expiryKey(exp, k), ev: ev})
	return false, nil
}

// WebhookEvent reports whether a delivery id is remembered and unexpired,
// and the event id recorded with it by SeenWebhookEvent ("" when it was
// recorded without one).
func (t *AcceptTx) WebhookEvent(receiver, id string, now time.Time) (eventID string, seen bool) {
	e, ev := t.lookup(hashSeen(key(receiver, id)), true)
	if e <= now.UnixNano() {
		return "", false
	}
	return ev.String(), true
}

// HasWebhook reports whether a delivery id is remembered and unexpired.
func (t *AcceptTx) HasWebhook(receiver, id string, now time.Time) bool {
	e, _ := t.lookup(hashSeen(key(receiver, id)), false)
	return e > now.UnixNano()
}

// MarkChangeAnnounced remembers that the change with this event id was
// announced, until expires.
func (t *AcceptTx) MarkChangeAnnounced(eventID string, now, expires time.Time) error {
	_, err := t.SeenWebhook(changeReceiver, changePrefix+eventID, now, expires)
	return err
}

// ChangeAnnounced reports whether the change with this event id was
// announced by webhook and is still remembered.
func (t *AcceptTx) ChangeAnnounced(eventID string, now time.Time) bool {
	return t.HasWebhook(changeReceiver, changePrefix+eventID, now)
}

// QueueWatch queues a watch encoded by EncodeQueuedWatch. raw must not
// change afterwards.
func (t *AcceptTx) QueueWatch(raw []byte) error {
	t.watches = append(t.watches, raw)
	return nil
}

// Enqueue adds an event to the outbox. payload must not change afterwards.
func (t *AcceptTx) Enqueue(subject, msgID string, payload []byte) error {
	t.out = append(t.out, jOut{subject: subject, msgID: msgID, payload: payload})
	return nil
}

// lookup is an id's latest expiry: recorded by this function, an earlier
// one of the batch, or committed; and with withEvent the event recorded
// with that entry. Without it (the hot path) it reads no event map.
func (t *AcceptTx) lookup(h seenHash, withEvent bool) (int64, eventRef) {
	var e int64
	var ev eventRef
	for _, a := range t.seen {
		if a.h == h && a.exp > e {
			e, ev = a.exp, a.ev
		}
	}
	if v, ok := t.batch[h]; ok && v > e {
		e = v
		if withEvent {
			ev = t.batchEv[h]
		}
	}
	if v, ok := t.s.seen.get(h); ok && v > e {
		e = v
		if withEvent {
			ev = t.s.seen.event(h)
		}
	}
	return e, ev
}

func (t *AcceptTx) empty() bool { return len(t.seen) == 0 && len(t.watches) == 0 && len(t.out) == 0 }

// appendBody encodes the request's changes as a record body:
// uvarint-counted lists of expiry index keys, queued watches and outbox
// entries (subject, msg id, payload), each field uvarint-length-prefixed.
// When a seen id carries an event, a fourth list follows: one field per
// expiry index key, its value (the event's 16 bytes, or empty). Records
// without one are as before it existed, and old records replay as ids
// without an event.
func (t *AcceptTx) appendBody(b []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(t.seen)))
	for _, a := range t.seen {
		b = appendField(b, a.ikey)
	}
	b = binary.AppendUvarint(b, uint64(len(t.watches)))
	for _, w := range t.watches {
		b = appendField(b, w)
	}
	b = binary.AppendUvarint(b, uint64(len(t.out)))
	for _, o := range t.out {
		b = appendField(b, o.subject)
		b = appendField(b, o.msgID)
		b = appendField(b, o.payload)
	}
	if t.hasEvents() {
		b = binary.AppendUvarint(b, uint64(len(t.seen)))
		for i := range t.seen {
			b = appendField(b, t.seen[i].value())
		}
	}
	return b
}

func (t *AcceptTx) hasEvents() bool {
	for i := range t.seen {
		if t.seen[i].ev != (eventRef{}) {
			return true
		}
	}
	return false
}

// value is the entry's expiry index value: its event, or nothing.
func (a *jSeen) value() []byte {
	if a.ev == (eventRef{}) {
		return nil
	}
	return a.ev[:]
}

func appendField[F string | []byte](b []byte, f F) []byte {
	b = binary.AppendUvarint(b, uint64(len(f)))
	return append(b, f...)
}

// decodeBody reads a record body. The slices point into body. values is
// nil, or the expiry index value of each of seen.
func decodeBody(body []byte) (seen, values, watches [][]byte, out []jOut, err error) {
	list := func() ([][]byte, error) {
		n, w := binary.Uvarint(body)
		if w <= 0 || n > uint64(len(body)) {
			return nil, errOutboxEntry
		}
		body = body[w:]
		l := make([][]byte, 0, n)
		for range n {
			f, rest, ok := cutField(body)
			if !ok {
				return nil, errOutboxEntry
			}
			l, body = append(l, f), rest
		}
		return l, nil
	}
	if seen, err = list(); err != nil {
		return
	}
	if watches, err = list(); err != nil {
		return
	}
	n, w := binary.Uvarint(body)
	if w <= 0 || n > uint64(len(body)) {
		return nil, nil, nil, nil, errOutboxEntry
	}
	body = body[w:]
	for range n {
		var subj, id, payload []byte
		var ok bool
		if subj, body, ok = cutField(body); !ok {
			return nil, nil, nil, nil, errOutboxEntry
		}
		if id, body, ok = cutField(body); !ok {
			return nil, nil, nil, nil, errOutboxEntry
		}
		if payload, body, ok = cutField(body); !ok {
			return nil, nil, nil, nil, errOutboxEntry
		}
		out = append(out, jOut{subject: string(subj), msgID: string(id), payload: payload})
	}
	if len(body) != 0 {
		if values, err = list(); err != nil || len(values) != len(seen) || len(body) != 0 {
			return nil, nil, nil, nil, errOutboxEntry
		}
	}
	return seen, values, watches, out, nil
}

// acceptor is the journal's write path: the batch loop that runs Accepts
// and writes their records. The journal and buf belong to the loop's
// goroutine (and to Open before it starts); the journal's Release, which
// the checkpoint calls, has its own lock. The rest is atomic.
type acceptor struct {
	j             *journal.Journal
	buf           []byte
	reqs          chan *acceptReq
	stop, stopped chan struct{}
	// failed is the journal's write failure: no more batches until a
	// probe write succeeds (tryRecover).
	failed                    atomic.Pointer[error]
	batches, records, writeNs atomic.Int64
	// recoverEvery paces the probes; lastProbe and failedAt belong to the
	// loop's goroutine.
	recoverEvery        time.Duration
	lastProbe, failedAt time.Time
}

// recoverEvery is how often a failed journal is probed.
const recoverEvery = 5 * time.Second

type acceptReq struct {
	fn   func(*AcceptTx) error
	done chan error
}

// Accept runs fn in the next journal batch and returns once its changes are
// durable (or fn's error). fn runs once, alone, on the batch's goroutine,
// and must only touch the AcceptTx. A function that changes nothing (a
// duplicate) writes no record.
func (s *Store) Accept(ctx context.Context, fn func(*AcceptTx) error) error {
	r := &acceptReq{fn: fn, done: make(chan error, 1)}
	if err := submit(s, ctx, s.acc.reqs, r); err != nil {
		return err
	}
	return <-r.done
}

func (s *Store) acceptLoop() {
	defer close(s.acc.stopped)
	// As in the commit loop: when several webhooks are arriving, one
	// fdatasync (which costs CPU as well as time) serves more of them.
	batchLoop(s.acc.reqs, s.acc.stop, s.commit.maxBatch, s.commit.lingerFill, s.commit.lingerFor, s.acceptBatch)
}

func (s *Store) acceptBatch(batch []*acceptReq) {
	s.tryRecover()
	if err := s.acceptRefusal(); err != nil {
		for _, r := range batch {
			r.done <- err
		}
		return
	}
	pend := map[seenHash]int64{}
	var pendEv map[seenHash]eventRef // made for the first id with an event
	a := &s.acc
	buf := a.buf[:0]
	seq := a.j.NextSeq()
	ok := make([]*acceptReq, 0, len(batch))
	txs := make([]AcceptTx, 0, len(batch))
	// Functions that changed nothing (duplicates) are answered with the
	// batch: a duplicate of an id recorded earlier in this batch must not
	// be acknowledged before that record is durable.
	var empty []*acceptReq
	for _, r := range batch {
		tx := AcceptTx{s: s, batch: pend, batchEv: pendEv}
		if err := r.fn(&tx); err != nil {
			r.done <- err
			continue
		}
		if tx.empty() {
			empty = append(empty, r)
			continue
		}
		for _, e := range tx.seen {
			if old, ok := pend[e.h]; !ok || e.exp > old {
				pend[e.h] = e.exp
				switch {
				case e.ev != eventRef{}:
					if pendEv == nil {
						pendEv = map[seenHash]eventRef{}
					}
					pendEv[e.h] = e.ev
				case pendEv != nil:
					delete(pendEv, e.h)
				}
			}
		}
		start := len(buf)
		buf = append(buf, make([]byte, journal.HeaderSize)...)
		buf = tx.appendBody(buf)
		journal.Seal(buf[start:], seq)
		seq++
		ok = append(ok, r)
		txs = append(txs, tx)
	}
	if cap(buf) <= 4<<20 {
		a.buf = buf
	}
	if len(ok) == 0 {
		for _, r := range empty {
			r.done <- nil
		}
		return
	}
	first := a.j.NextSeq()
	t0 := time.Now()
	err := a.j.Write(buf, len(ok))
	a.writeNs.Add(int64(time.Since(t0)))
	if err != nil {
		s.log.Error("webhook journal write failed; the batch is refused", "err", err)
		if f := a.j.Failed(); f != nil {
			a.failed.Store(&f)
			a.failedAt, a.lastProbe = time.Now(), time.Now()
		}
		for _, r := range ok {
			r.done <- err
		}
		for _, r := range empty {
			r.done <- err
		}
		return
	}
	a.batches.Add(1)
	a.records.Add(int64(len(ok)))
	queued := 0
	for i := range txs {
		queued += len(txs[i].watches)
	}
	s.queuedWatches.Add(int64(queued))
	// Durable: now the ids count as seen and the events can go.
	s.seen.apply(&seenChanges{add: pend, ev: pendEv})
	recs := make([]ckptRec, len(txs))
	// The records' seen keys (and values) share one array per batch: the
	// checkpoint takes the batch's records together.
	nSeen := 0
	for i := range txs {
		nSeen += len(txs[i].seen)
	}
	keys := make([][]byte, 0, nSeen)
	var values [][]byte
	var entries []jEntry
	for i := range txs {
		tx := &txs[i]
		rs := first + uint64(i)
		recs[i] = ckptRec{seq: rs, watches: tx.watches}
		if len(tx.seen) > 0 {
			from := len(keys)
			for _, e := range tx.seen {
				keys = append(keys, e.ikey)
			}
			recs[i].seen = keys[from:len(keys):len(keys)]
		}
		if tx.hasEvents() {
			if values == nil {
				values = make([][]byte, 0, nSeen)
			}
			from := len(values)
			for k := range tx.seen {
				values = append(values, tx.seen[k].value())
			}
			recs[i].values = values[from:len(values):len(values)]
		}
		for _, o := range tx.out {
			entries = append(entries, jEntry{rec: rs, jOut: o})
		}
	}
	big := s.ckpt.add(recs)
	s.out.journaled(entries, first+uint64(len(ok))-1)
	if big {
		s.ckpt.kick()
	}
	for _, r := range ok {
		r.done <- nil
	}
	for _, r := range empty {
		r.done <- nil
	}
}

// tryRecover, while the journal has failed, probes it at most every
// recoverEvery (journal.Recover: a write and sync in its directory); once
// that succeeds, webhooks are taken again without a restart. It runs on
// the accept loop's goroutine; the checkpoint loop sends an empty Accept
// while the journal has failed, so a probe runs even when ingest refuses
// every webhook before it reaches the journal.
func (s *Store) tryRecover() {
	a := &s.acc
	if a.failed.Load() == nil || time.Since(a.lastProbe) < a.recoverEvery {
		return
	}
	a.lastProbe = time.Now()
	if err := a.j.Recover(); err != nil {
		s.log.Debug("webhook journal still cannot write", "err", err)
		return
	}
	a.failed.Store(nil)
	s.log.Warn("webhook journal writes again: a probe write succeeded", "failed_for", time.Since(a.failedAt).Round(time.Millisecond))
}

// acceptRefusal is why the journal takes no batch now, or nil.
func (s *Store) acceptRefusal() error {
	if e := s.acc.failed.Load(); e != nil {
		return *e
	}
	if e := s.ckpt.err.Load(); e != nil {
		s.ckpt.pendMu.Lock()
		n := len(s.ckpt.pend)
		s.ckpt.pendMu.Unlock()
		if n >= maxPendingCheckpoint {
			return fmt.Errorf("%d webhooks wait for a journal checkpoint into %s, which fails: %w", n, s.path, *e)
		}
	}
	return nil
}

// openJournal replays the journal into bbolt and the outbox queue. It runs
// in Open, before the loops start.
func (s *Store) openJournal(segSize int64, sync func(*os.File) error) error {
	var ckpt, acked uint64
	if err := s.db.View(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bMeta)
		if v := meta.Get([]byte(metaJournalCkpt)); len(v) == 8 {
			ckpt = bin64(v)
		}
		if v := meta.Get([]byte(metaJournalAcked)); len(v) == 8 {
			acked = bin64(v)
		}
		return nil
	}); err != nil {
		return err
	}
	var apply []ckptRec
	var entries []jEntry
	j, err := journal.Open(journal.Options{
		Dir:          filepath.Join(filepath.Dir(s.path), journal.DirName),
		SegmentBytes: segSize,
		After:        max(ckpt, acked),
		Sync:         sync,
	}, func(seq uint64, body []byte) error {
		seen, values, watches, out, err := decodeBody(body)
		if err != nil {
			return fmt.Errorf("record %d: %w", seq, err)
		}
		if seq > ckpt {
			apply = append(apply, ckptRec{seq: seq, seen: seen, values: values, watches: watches})
		}
		if seq > acked {
			for _, o := range out {
				entries = append(entries, jEntry{rec: seq, jOut: o})
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if len(apply) > 0 {
		ckpt = apply[len(apply)-1].seq
		if err := s.db.Update(func(btx *bolt.Tx) error {
			if err := putRecords(&Tx{tx: btx}, apply); err != nil {
				return err
			}
			return btx.Bucket(bMeta).Put([]byte(metaJournalCkpt), u64(ckpt))
		}); err != nil {
			j.Close()
			return fmt.Errorf("replay journal into %s: %w", s.path, err)
		}
	}
	s.acc.j = j
	s.out.jq.push(entries, j.NextSeq()-1)
	s.ckpt.seq, s.ckpt.ackedSeq = ckpt, acked
	j.Release(min(ckpt, acked))
	return nil
}
