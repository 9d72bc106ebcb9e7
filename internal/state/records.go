package state

import (
	"time"

	"github.com/cakework-relay/cakework-relay/internal/event"
)

// Kinds used as key prefixes: the event kinds.
const (
	KindBuild         = event.KindBuild
	KindVM            = event.KindVM
	KindFunctionBuild = event.KindFunctionBuild
)

// BuildState is what the relay last knew of a build. The poller writes it,
// in the same transaction as the event that announces the change; ingest
// reads it so as not to announce a status the poller already did (and
// marks the changes it announced, see MarkChangeAnnounced).
type BuildState struct {
	Status    string    `json:"status"`
	ImageID   string    `json:"imageId,omitempty"`
	CreatedAt time.Time `json:"createdAt,omitzero"`
	UpdatedAt time.Time `json:"updatedAt,omitzero"`
	// FirstSeen is when the relay first heard of the build (stuck_after
	// counts from CreatedAt when known, else from here).
	FirstSeen time.Time `json:"firstSeen"`
	// ObservedBy is who saw the last change: webhook or poller.
	ObservedBy string `json:"observedBy"`
	// StuckEmitted is set once build.stuck went out.
	StuckEmitted bool `json:"stuckEmitted,omitempty"`
}

// Finished reports whether the build reached a final status.
func (b BuildState) Finished() bool { return b.Status == "succeeded" || b.Status == "failed" }

// GetBuild reads a build's state.
func (t *Tx) GetBuild(id string) (BuildState, bool, error) {
	var b BuildState
	ok, err := t.GetResource(KindBuild, id, &b)
	return b, ok, err
}

// BuildRecord reads a build's state in a View of its own. bad is a record
// that does not decode (the caller may go on without it); err is the
// store's own failure (closed). Ingest calls it on its hot path: through
// an interface, a closure of the caller's would escape to the heap.
func (s *Store) BuildRecord(id string) (b BuildState, known bool, bad, err error) {
	err = s.View(func(tx *Tx) error {
		b, known, bad = tx.GetBuild(id)
		return nil
	})
	return b, known, bad, err
}

// PutBuild writes a build's state.
func (t *Tx) PutBuild(id string, b BuildState) error { return t.PutResource(KindBuild, id, b) }
