package cluster

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// The buckets of ingest and the sinks in a fleet (the lease and the
// leader's knowledge are in Bucket). Each is named from bus.stream, so
// fleets on different streams of one NATS never meet, and has the streams'
// replicas (bus.replicas).

// SeenBucket is the key-value bucket of webhook ids accepted by any member
// (and of the changes webhooks announced). Its TTL is ingest.seen_ttl: an
// id is a duplicate at every member for that long after its last write.
func SeenBucket(stream string) string { return "RELAY_" + stream + "_SEEN" }

// SinksBucket is the key-value bucket of the sinks' records: the attempt
// counts of messages being retried, Slack's thread parents, log tails and
// flood windows, and which member each sink's consumer is pinned to.
func SinksBucket(stream string) string { return "RELAY_" + stream + "_SINKS" }

// SinkRecordTTL is how long a sink record nobody writes is kept (Slack's
// threads are not continued after it; the stream keeps events for 7 days
// by default).
const SinkRecordTTL = 7 * 24 * time.Hour

// BucketOptions open one fleet bucket.
type BucketOptions struct {
	Name        string
	Description string
	// TTL drops a key this long after its last write (0: never).
	TTL      time.Duration
	Replicas int
}

// OpenBucket creates the bucket or updates its TTL and replicas (a
// member started with a new ingest.seen_ttl changes it for the fleet;
// the last one started wins). Every member opens the buckets at start,
// so any of them can be first.
func OpenBucket(ctx context.Context, js jetstream.JetStream, o BucketOptions) (jetstream.KeyValue, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      o.Name,
		Description: o.Description,
		History:     1,
		TTL:         o.TTL,
		Storage:     jetstream.FileStorage,
		Replicas:    max(o.Replicas, 1),
	})
	if err != nil {
		return nil, fmt.Errorf("cluster: key-value bucket %s: %w", o.Name, err)
	}
	return kv, nil
}
