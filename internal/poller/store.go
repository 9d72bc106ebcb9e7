package poller

import (
	"context"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/state"
)

// Store is where the poller keeps its knowledge: each build's and VM's last
// record, the log cursors, the watches, the VM baseline, and the events
// that announce a change, which commit together with the change (the
// exactly-once guarantee rests on that). StateStore puts it in the relay's
// bbolt state. It is the seam for a second home (the fleet's replicated
// JetStream KV): another implementation of Store and Tx, chosen by what the
// caller passes in Options.Store, never by a mode flag in the poller.
type Store interface {
	// View runs fn in a read-only transaction.
	View(fn func(Tx) error) error
	// Update runs fn in a read-write transaction and returns once it is
	// durable. fn may run more than once.
	Update(ctx context.Context, fn func(Tx) error) error
	// ApplyWatchQueue folds the watches ingest queued into the watch list
	// and reports how many were new. Build watches are capped at
	// maxBuilds (poller.builds.max_watched; 0: no cap): a queued one that
	// would pass it is dropped from the queue and counted in refused.
	ApplyWatchQueue(ctx context.Context, maxBuilds int) (added, refused int, err error)
}

// Tx is what the poller reads and writes in one transaction.
type Tx interface {
	GetResource(kind, id string, v any) (bool, error)
	PutResource(kind, id string, v any) error
	DeleteResource(kind, id string) error
	ForEachResource(kind string, fn func(id string, raw []byte) error) error

	GetBuild(id string) (state.BuildState, bool, error)
	PutBuild(id string, b state.BuildState) error

	GetCursor(kind, id string, v any) (bool, error)
	PutCursor(kind, id string, v any) error
	DeleteCursor(kind, id string) error
	ForEachCursor(kind string, fn func(id string, raw []byte) error) error

	Watches(kind string) (map[string]state.Watch, error)
	// WatchesPage lists up to limit watches of kind whose ids sort after
	// after ("" for the first), in id order: ticks read the watch list in
	// bounded pages.
	WatchesPage(kind, after string, limit int) ([]state.WatchEntry, error)
	// WatchCount is how many watches of kind there are.
	WatchCount(kind string) (int, error)
	GetWatch(kind, id string) (state.Watch, bool, error)
	PutWatch(kind, id string, w state.Watch) error
	DeleteWatch(kind, id string) (bool, error)

	GetMeta(k string, v any) (bool, error)
	PutMeta(k string, v any) error

	// ChangeAnnounced reports whether a webhook announced the change with
	// this event id (ingest marks it), so the poller records it without a
	// second event.
	ChangeAnnounced(eventID string, now time.Time) bool
	// Enqueue adds an event to the outbox, published after the commit.
	Enqueue(subject, msgID string, payload []byte) error
}

var _ Tx = (*state.Tx)(nil)

// StateStore is the poller's Store in the relay's bbolt state.
func StateStore(s *state.Store) Store {
	if s == nil {
		return nil
	}
	return stateStore{s}
}

type stateStore struct{ s *state.Store }

func (b stateStore) View(fn func(Tx) error) error {
	return b.s.View(func(tx *state.Tx) error { return fn(tx) })
}

func (b stateStore) Update(ctx context.Context, fn func(Tx) error) error {
	return b.s.Update(ctx, func(tx *state.Tx) error { return fn(tx) })
}

func (b stateStore) ApplyWatchQueue(ctx context.Context, maxBuilds int) (int, int, error) {
	return b.s.ApplyWatchQueueCapped(ctx, maxBuilds)
}
