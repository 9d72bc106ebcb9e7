package autostop

import (
	"context"

	"github.com/cakework-relay/cakework-relay/internal/event"
	"github.com/cakework-relay/cakework-relay/internal/state"
)

// Store is where auto-stop keeps its records (per VM: the last activity
// signal, the warning and the stop; the last minute's stops) and queues
// its events, which commit together with the record that explains them.
// StateStore puts them in the relay's bbolt state; a fleet keeps them in
// its replicated bucket, fenced like the poller's (internal/cluster).
type Store interface {
	View(fn func(Tx) error) error
	Update(ctx context.Context, fn func(Tx) error) error
}

// Tx is what auto-stop reads and writes in one transaction.
type Tx interface {
	GetSink(sink, k string, v any) (bool, error)
	PutSink(sink, k string, v any) error
	DeleteSink(sink, k string) error
	ForEachSink(sink string, fn func(k string, raw []byte) error) error
	EnqueueEvent(prefix string, e event.Event) error
}

var _ Tx = (*state.Tx)(nil)

// StateStore is auto-stop's Store in the relay's bbolt state.
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

// Ready is the state store's readiness.
func (b stateStore) Ready() error { return b.s.Ready() }
