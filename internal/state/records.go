package state

import (
	"encoding/json"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/event"
)

// Kinds used as key prefixes: the event kinds.
const (
	KindBuild         = event.KindBuild
	KindVM            = event.KindVM
	KindFunctionBuild = event.KindFunctionBuild
)

// BuildState is what the relay last knew of a build. Ingest and the poller
// both write it, in the same transaction as the event that announces the
// change, so neither announces a status the other already did.
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

// PutBuild writes a build's state.
func (t *Tx) PutBuild(id string, b BuildState) error { return t.PutResource(KindBuild, id, b) }

// EncodeBuild encodes a build's state for PutBuildEncoded. Callers on a hot
// path encode before Update, so the work is not done in the commit loop.
func EncodeBuild(b BuildState) ([]byte, error) { return json.Marshal(b) }

// PutBuildEncoded writes a build's state encoded by EncodeBuild. raw must
// not change until Update returned.
func (t *Tx) PutBuildEncoded(id string, raw []byte) error {
	return t.tx.Bucket(bResources).Put(key(KindBuild, id), raw)
}
