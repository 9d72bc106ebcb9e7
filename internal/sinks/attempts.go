package sinks

import (
	"context"
	"log/slog"
	"strconv"
	"time"
)

// attemptRecord is kept in the sink records (the state store, or the
// fleet's bucket) while a message is retried, and while its dead letter
// is being stored.
type attemptRecord struct {
	Attempts  int    `json:"attempts"`
	LastError string `json:"lastError"`
	// DeadLetter is written before each publish of the message's dead
	// letter and goes with the record once the message is acked: a
	// redelivered message that has it may be on the DLQ already (the
	// run that stored it stopped before the ack), one without it is not.
	DeadLetter *deadLetterIntent `json:"deadLetter,omitempty"`
}

// deadLetterIntent says a dead letter is being stored.
type deadLetterIntent struct {
	// At is when its publish began, by this relay's wall clock: the DLQ
	// stream stamps its messages by the server's, and storedBefore looks
	// only around this time.
	At time.Time `json:"at"`
	// MsgID is the dead letter's Nats-Msg-Id.
	MsgID string `json:"msgId"`
}

func attemptKey(seq uint64) string { return attemptsPrefix + "/" + strconv.FormatUint(seq, 10) }

// attemptsPrefix is the first part of every attempt record's key.
const attemptsPrefix = "attempts"

// storedAttempts is the Attempts of one held message, kept in the state
// store under its stream sequence. It is used by one lane at a time.
type storedAttempts struct {
	store Records // nil: nothing is kept
	sink  string
	log   *slog.Logger
	it    *item
	saved bool // a record exists in the store
	// rec is the record as last read or written; loaded: read already.
	rec    attemptRecord
	loaded bool
}

// Load reads the count of a redelivered message; a first delivery has
// none, so it is not looked up.
func (a *storedAttempts) Load() int { return a.record().Attempts }

// record reads the record of a redelivered message, once.
func (a *storedAttempts) record() attemptRecord {
	if a.loaded || a.store == nil || a.it.delivered <= 1 || a.it.seq == 0 {
		a.loaded = true
		return a.rec
	}
	a.loaded = true
	var rec attemptRecord
	var ok bool
	err := a.store.View(func(tx RecordTx) (err error) {
		ok, err = tx.GetSink(a.sink, attemptKey(a.it.seq), &rec)
		return err
	})
	if err != nil {
		a.log.Warn("sink: reading attempt record; counting from 0 (and not looking for a dead letter stored before)", "err", err)
		return a.rec
	}
	if ok {
		a.saved = true
		a.rec = rec
	}
	return a.rec
}

func (a *storedAttempts) Retrying(n int, err error) {
	if a.store == nil || a.it.seq == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// An intent read with the record stays: this run may dead-letter the
	// message again, and the look must still find the earlier one.
	rec := attemptRecord{Attempts: n, LastError: truncate(err.Error(), 512), DeadLetter: a.rec.DeadLetter}
	if e := a.store.Update(ctx, func(tx RecordTx) error { return tx.PutSink(a.sink, attemptKey(a.it.seq), rec) }); e != nil {
		a.log.Warn("sink: saving attempt count", "err", e)
		return
	}
	a.rec, a.saved = rec, true
}

// storing records that the message's dead letter is being stored now
// under msgID.
func (a *storedAttempts) storing(msgID string, at time.Time) error {
	if a.store == nil || a.it.seq == 0 {
		return nil
	}
	a.record()
	if dl := a.rec.DeadLetter; dl != nil && dl.MsgID == msgID && a.saved {
		// A retry of the same dead letter: the first try may be the
		// one stored (its answer lost), so its time is what a
		// redelivery looks from.
		return nil
	}
	rec := a.rec
	rec.DeadLetter = &deadLetterIntent{At: at.UTC(), MsgID: msgID}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.store.Update(ctx, func(tx RecordTx) error { return tx.PutSink(a.sink, attemptKey(a.it.seq), rec) }); err != nil {
		return err
	}
	a.rec, a.saved = rec, true
	return nil
}

// forgetIntent makes the next storing record its own time, even for the
// same msg id: a look did not find the dead letter the kept intent
// names.
func (a *storedAttempts) forgetIntent() { a.rec.DeadLetter = nil }

// clear drops the record once the message is acked.
func (a *storedAttempts) clear() {
	if a.store == nil || !a.saved {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if e := a.store.Update(ctx, func(tx RecordTx) error { return tx.DeleteSink(a.sink, attemptKey(a.it.seq)) }); e != nil {
		a.log.Warn("sink: clearing attempt count", "err", e)
	}
}
