package sinks

import (
	"context"
	"log/slog"
	"strconv"
	"time"
)

// attemptRecord is kept in the sink records (the state store, or the
// fleet's bucket) while a message is retried.
type attemptRecord struct {
	Attempts  int    `json:"attempts"`
	LastError string `json:"lastError"`
}

func attemptKey(seq uint64) string { return "attempts/" + strconv.FormatUint(seq, 10) }

// storedAttempts is the Attempts of one held message, kept in the state
// store under its stream sequence. It is used by one lane at a time.
type storedAttempts struct {
	store Records // nil: nothing is kept
	sink  string
	log   *slog.Logger
	it    *item
	saved bool // a record exists in the store
}

// Load reads the count of a redelivered message; a first delivery has
// none, so it is not looked up.
func (a *storedAttempts) Load() int {
	if a.store == nil || a.it.delivered <= 1 || a.it.seq == 0 {
		return 0
	}
	var rec attemptRecord
	var ok bool
	err := a.store.View(func(tx RecordTx) (err error) {
		ok, err = tx.GetSink(a.sink, attemptKey(a.it.seq), &rec)
		return err
	})
	if err != nil {
		a.log.Warn("sink: reading attempt count; counting from 0", "err", err)
		return 0
	}
	if ok {
		a.saved = true
		return rec.Attempts
	}
	return 0
}

func (a *storedAttempts) Retrying(n int, err error) {
	if a.store == nil || a.it.seq == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rec := attemptRecord{Attempts: n, LastError: truncate(err.Error(), 512)}
	if e := a.store.Update(ctx, func(tx RecordTx) error { return tx.PutSink(a.sink, attemptKey(a.it.seq), rec) }); e != nil {
		a.log.Warn("sink: saving attempt count", "err", e)
		return
	}
	a.saved = true
}

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
