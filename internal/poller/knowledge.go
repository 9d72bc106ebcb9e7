package poller

import (
	"encoding/json"
	"sync"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/state"
)

// VM is what the poller knows of one VM: its identity and last observed
// state, and how fresh that knowledge is. It is the one view of a VM that
// readers in the process (the auto-stopper) get. The auto-stopper must only
// act on a VM whose knowledge is fresh: a failing sweep or a failing log
// stream means the relay does not know whether it is idle.
//
// VMsInState fills every field, from the persisted records and the
// in-memory freshness; VMKnowledge only the in-memory ones (ID, Known,
// State and the freshness).
type VM struct {
	ID      string
	ImageID string
	// StateSince is when the VM entered its current state as far as the
	// relay can tell: the later of the upstream updatedAt and the moment the
	// relay first saw the VM.
	StateSince time.Time
	// WatchedSince is when the relay began to read the VM's log: the
	// baseline for a VM already running then, else when it was first seen.
	WatchedSince time.Time
	// Known is false for a VM the poller has never seen.
	Known bool
	// State is the state from the last complete sweep (or getVM).
	State string
	// LastSweepOK / LastSweepFailed are the last complete and the last
	// failed VM sweep (the sweep is all or nothing, so these are shared by
	// every VM).
	LastSweepOK     time.Time
	LastSweepFailed time.Time
	// SweepFailing: the last sweep failed. SweepRecovered is when a sweep
	// first completed after the last failed one (zero if none failed).
	SweepFailing   bool
	SweepRecovered time.Time
	// LastLogOK / LastLogFailed are the last logs pass over this VM's stream
	// that read it to the end, and the last that failed. Zero LastLogOK: not
	// read to the end yet.
	LastLogOK     time.Time
	LastLogFailed time.Time
	// LogFailing: a logs pass over this VM's stream failed and none has
	// read it to the end since. It stays set while the stream backs off
	// (no pass is made, so none fails), and through passes that succeed
	// without reaching the end. LogRecovered is when a pass first read the
	// stream to its end after the last failure (zero if none failed).
	LogFailing   bool
	LogRecovered time.Time
	// LastLogLine is the timestamp of the newest line emitted for this VM
	// (persisted in its cursor, so it survives restarts).
	LastLogLine time.Time
	// Tailing is true while the VM has a log cursor.
	Tailing bool
}

// knowledge is the in-memory side of VM.
type knowledge struct {
	mu             sync.Mutex
	sweepOK        time.Time
	sweepFailed    time.Time
	sweepFailing   bool
	sweepRecovered time.Time
	vms            map[string]*vmKnow
}

type vmKnow struct {
	state         string
	lastLogOK     time.Time
	lastLogFailed time.Time
	logFailing    bool
	logRecovered  time.Time
	lastLine      time.Time
	tailing       bool
}

func newKnowledge() *knowledge { return &knowledge{vms: map[string]*vmKnow{}} }

func (k *knowledge) get(id string) *vmKnow {
	v := k.vms[id]
	if v == nil {
		v = &vmKnow{}
		k.vms[id] = v
	}
	return v
}

func (k *knowledge) count() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.vms)
}

func (k *knowledge) setState(id, st string) {
	k.mu.Lock()
	k.get(id).state = st
	k.mu.Unlock()
}

func (k *knowledge) forget(id string) {
	k.mu.Lock()
	delete(k.vms, id)
	k.mu.Unlock()
}

func (k *knowledge) sweep(ok bool, at time.Time) {
	k.mu.Lock()
	if ok {
		k.sweepOK = at
		if k.sweepFailing {
			k.sweepFailing, k.sweepRecovered = false, at
		}
	} else {
		k.sweepFailed, k.sweepFailing = at, true
	}
	k.mu.Unlock()
}

// logPass records a logs pass over a VM's stream. Only a pass that read the
// stream to its end counts as LastLogOK, and only such a pass ends a
// failure: with pages left over, newer lines (activity) may still be
// unread.
func (k *knowledge) logPass(id string, ok, drained bool, at time.Time, newest time.Time, tailing bool) {
	k.mu.Lock()
	v := k.get(id)
	switch {
	case ok && drained:
		v.lastLogOK = at
		if v.logFailing {
			v.logFailing, v.logRecovered = false, at
		}
	case !ok:
		v.lastLogFailed, v.logFailing = at, true
	}
	if newest.After(v.lastLine) {
		v.lastLine = newest
	}
	v.tailing = tailing
	k.mu.Unlock()
}

// VMKnowledge reports how fresh the poller's view of VM id is. It is cheap
// (in memory) and safe to call from any goroutine.
func (p *Poller) VMKnowledge(id string) VM {
	k := p.know
	k.mu.Lock()
	defer k.mu.Unlock()
	out := VM{ID: id, LastSweepOK: k.sweepOK, LastSweepFailed: k.sweepFailed,
		SweepFailing: k.sweepFailing, SweepRecovered: k.sweepRecovered}
	if v := k.vms[id]; v != nil {
		out.Known = v.state != ""
		out.State = v.state
		out.LastLogOK, out.LastLogFailed = v.lastLogOK, v.lastLogFailed
		out.LogFailing, out.LogRecovered = v.logFailing, v.logRecovered
		out.LastLogLine = v.lastLine
		out.Tailing = v.tailing
	}
	return out
}

// loadKnowledge fills the in-memory view from state at start: each VM's
// last state and the newest emitted line of its stream.
func (p *Poller) loadKnowledge() error {
	return p.store.View(func(tx Tx) error {
		k := p.know
		k.mu.Lock()
		defer k.mu.Unlock()
		// A fleet's new leader starts again from the Store: nothing in
		// memory from an earlier term counts as fresh.
		k.sweepOK, k.sweepFailed, k.sweepFailing, k.sweepRecovered = time.Time{}, time.Time{}, false, time.Time{}
		k.vms = map[string]*vmKnow{}
		if err := tx.ForEachResource(state.KindVM, func(id string, raw []byte) error {
			var r vmRecord
			if json.Unmarshal(raw, &r) == nil && r.GoneAt.IsZero() {
				k.get(id).state = r.VM.State
			}
			return nil
		}); err != nil {
			return err
		}
		return tx.ForEachCursor(state.KindVM, func(id string, raw []byte) error {
			var c cursor
			if json.Unmarshal(raw, &c) == nil && c.LastTs > 0 {
				v := k.get(id)
				v.lastLine = time.UnixMilli(c.LastTs).UTC()
				v.tailing = true
			}
			return nil
		})
	})
}
