package cluster

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cakework-relay/cakework-relay/internal/bus"
)

// Ingest is a fleet member's webhook commit (ingest.Fleet): the ids every
// member remembers in SeenBucket, and a synchronous publish to the events
// stream, which JetStream acknowledges once the stream's quorum stored it
// (bus.replicas >= 3).
type Ingest struct {
	Bus *bus.Bus
	IDs jetstream.KeyValue
	// Watch asks the leader's poller to watch a build (nil: nothing).
	Watch func(ctx context.Context, id string) error
}

// seenKey is the bucket key of a seen id: its hash, since a sender's
// delivery id may hold characters a key may not.
func seenKey(k string) string {
	h := sha256.Sum256([]byte(k))
	return "k." + hex.EncodeToString(h[:16])
}

// Seen implements ingest.Fleet.
func (f *Ingest) Seen(ctx context.Context, key string) (string, bool, error) {
	e, err := f.IDs.Get(ctx, seenKey(key))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("seen ids: %w", err)
	}
	return string(e.Value()), true, nil
}

// Publish implements ingest.Fleet.
func (f *Ingest) Publish(ctx context.Context, subject, msgID string, payload []byte) (bool, error) {
	ack, err := f.Bus.Publish(ctx, subject, msgID, payload, nil)
	if err != nil {
		return false, err
	}
	return ack.Duplicate, nil
}

// Remember implements ingest.Fleet. A Put, not a Create: the publish
// already decided (JetStream's dedup), and a second member writing the
// same id writes the same event id.
func (f *Ingest) Remember(ctx context.Context, eventID string, keys ...string) error {
	for _, k := range keys {
		if _, err := f.IDs.Put(ctx, seenKey(k), []byte(eventID)); err != nil {
			return fmt.Errorf("seen ids: %w", err)
		}
	}
	return nil
}

// WatchBuild implements ingest.Fleet.
func (f *Ingest) WatchBuild(ctx context.Context, id string) error {
	if f.Watch == nil {
		return nil
	}
	return f.Watch(ctx, id)
}
