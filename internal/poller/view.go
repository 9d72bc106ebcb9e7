package poller

import (
	"encoding/json"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/cakework"
	"github.com/cakework-relay/cakework-relay/internal/state"
)

// VMView is what the poller knows of one VM, for in-process readers such as
// the auto-stopper.
type VMView struct {
	ID      string
	State   string
	ImageID string
	// StateSince is when the VM entered its current state as far as the
	// relay can tell: the later of the upstream updatedAt and the moment the
	// relay first saw the VM.
	StateSince time.Time
	// WatchedSince is when the relay began to read the VM's log: the
	// baseline for a VM already running then, else when it was first seen.
	WatchedSince time.Time
	Knowledge
}

// VMsInState lists the VMs whose last observed state is st, from the
// persisted records plus the in-memory freshness. It reads state once; it
// is meant for a check every few seconds, not a hot path.
func (p *Poller) VMsInState(st string) ([]VMView, error) {
	var out []VMView
	err := p.store.View(func(tx Tx) error {
		return tx.ForEachResource(state.KindVM, func(id string, raw []byte) error {
			var r vmRecord
			if err := json.Unmarshal(raw, &r); err != nil || !r.GoneAt.IsZero() || r.VM.State != st {
				return nil
			}
			out = append(out, VMView{
				ID:           id,
				State:        r.VM.State,
				ImageID:      r.VM.ImageID,
				StateSince:   later(r.VM.UpdatedAt, r.FirstSeen),
				WatchedSince: r.FirstSeen,
				Knowledge:    p.VMKnowledge(id),
			})
			return nil
		})
	})
	return out, err
}

// Started is the state the auto-stopper looks at.
const Started = cakework.VMStarted

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
