package sinks

import (
	"context"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cakework-relay/cakework-relay/internal/state"
)

// ackFloorKey is where a sink's ack floor is kept in the state store.
const ackFloorKey = "ackfloor"

// ackFloor is the last stream sequence up to which the sink acked every
// message (the consumer's ack floor), kept by the relay: a consumer
// deleted on the server is re-created after it, not from "new".
type ackFloor struct {
	store *state.Store // nil: kept in memory only
	sink  string
	log   interface{ Warn(string, ...any) }

	mu       sync.Mutex
	seq      uint64 // the newest floor known
	saved    uint64 // the newest floor in the store
	cons     jetstream.Consumer
	recorded bool // a record exists in the store
}

// load reads the kept floor; found says the sink ran here before (its
// consumer existed).
func (f *ackFloor) load() (found bool) {
	if f.store == nil {
		return false
	}
	var seq uint64
	err := f.store.View(func(tx *state.Tx) (err error) {
		found, err = tx.GetSink(f.sink, ackFloorKey, &seq)
		return err
	})
	if err != nil {
		f.log.Warn("sink: reading the kept ack floor", "err", err)
	}
	f.mu.Lock()
	f.seq, f.saved, f.recorded = seq, seq, found
	f.mu.Unlock()
	return found
}

// observe raises the known floor to seq.
func (f *ackFloor) observe(seq uint64) {
	f.mu.Lock()
	f.seq = max(f.seq, seq)
	f.mu.Unlock()
}

func (f *ackFloor) get() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.seq
}

func (f *ackFloor) setConsumer(c jetstream.Consumer) {
	f.mu.Lock()
	f.cons = c
	f.mu.Unlock()
}

// save reads the floor from the server (every keep-alive tick, and at
// close) and keeps it when it moved. The first save records it even at 0:
// the record says the consumer existed.
func (f *ackFloor) save() {
	f.mu.Lock()
	cons := f.cons
	f.mu.Unlock()
	if cons == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	info, err := cons.Info(ctx)
	if err != nil {
		return // deleted or unreachable: the floor known so far stands
	}
	f.mu.Lock()
	seq := info.AckFloor.Stream
	if seq <= f.seq && f.saved == f.seq && f.recorded {
		f.mu.Unlock()
		return
	}
	if seq > f.seq {
		f.seq = seq
	}
	seq = f.seq
	f.mu.Unlock()
	if f.store == nil {
		return
	}
	if err := f.store.Update(ctx, func(tx *state.Tx) error {
		if err := tx.PutSink(f.sink, ackFloorKey, seq); err != nil {
			return err
		}
		return sweepAttempts(tx, f.sink, seq)
	}); err != nil {
		f.log.Warn("sink: keeping the ack floor", "err", err)
		return
	}
	f.mu.Lock()
	f.saved, f.recorded = seq, true
	f.mu.Unlock()
}

// sweepMax bounds the attempt records one save deletes.
const sweepMax = 1000

// sweepAttempts deletes the sink's attempt records of messages at or
// below the ack floor: every one of them was acked, so its record (an
// attempt count, a dead letter's intent) is of no more use. Records are
// normally cleared right after the ack; these are what a crash between
// the ack and the clear, a failed clear, or an ack whose confirmation was
// lost (deadLetters.ack keeps the record then) left behind.
func sweepAttempts(tx *state.Tx, sink string, floor uint64) error {
	var old []string
	err := tx.ForEachSink(sink+"/"+attemptsPrefix, func(k string, _ []byte) error {
		seq, err := strconv.ParseUint(k, 10, 64)
		if err == nil && seq <= floor && len(old) < sweepMax {
			old = append(old, attemptKey(seq))
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, k := range old {
		if err := tx.DeleteSink(sink, k); err != nil {
			return err
		}
	}
	return nil
}
