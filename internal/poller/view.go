package poller

import (
	"encoding/json"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/cakework"
	"github.com/cakework-relay/cakework-relay/internal/state"
)

// VMsInState lists the VMs whose last observed state is st, from the
// persisted records plus the in-memory freshness. It reads state once; it
// is meant for a check every few seconds, not a hot path.
func (p *Poller) VMsInState(st string) ([]VM, error) {
	var out []VM
	err := p.store.View(func(tx Tx) error {
		return tx.ForEachResource(state.KindVM, func(id string, raw []byte) error {
			var r vmRecord
			if err := json.Unmarshal(raw, &r); err != nil || !r.GoneAt.IsZero() || r.VM.State != st {
				return nil
			}
			v := p.VMKnowledge(id)
			v.State, v.ImageID = r.VM.State, r.VM.ImageID
			v.StateSince, v.WatchedSince = later(r.VM.UpdatedAt, r.FirstSeen), r.FirstSeen
			out = append(out, v)
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
