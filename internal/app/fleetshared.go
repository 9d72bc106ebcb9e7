package app

import (
	"context"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cakework-relay/cakework-relay/internal/bus"
	"github.com/cakework-relay/cakework-relay/internal/clock"
	"github.com/cakework-relay/cakework-relay/internal/cluster"
	"github.com/cakework-relay/cakework-relay/internal/config"
	"github.com/cakework-relay/cakework-relay/internal/ingest"
	"github.com/cakework-relay/cakework-relay/internal/sinks"
	"github.com/cakework-relay/cakework-relay/internal/state"
)

// FleetShared is what a fleet member's ingest and sinks share with the
// other members (cluster.enabled): the webhook ids every member
// remembers, and the sinks' records. Nil for a single relay.
type FleetShared struct {
	Member string
	Seen   jetstream.KeyValue
	Sinks  jetstream.KeyValue
	// LeaseTTL is also how long a sink's consumer stays pinned to a
	// silent member.
	LeaseTTL time.Duration
}

// openFleetShared opens (creating when missing) the fleet's ingest and
// sinks buckets, with the streams' replicas.
//
// A NATS cluster that is still forming (no JetStream meta leader yet, or
// too few peers for the replicas) refuses them for a moment: that is
// retried for up to fleetOpenWait, then the start fails with the reason.
func openFleetShared(ctx context.Context, cfg *config.Config, b *bus.Bus, log *slog.Logger) (*FleetShared, error) {
	deadline := time.Now().Add(fleetOpenWait)
	for {
		f, err := tryOpenFleetShared(ctx, cfg, b)
		if err == nil || time.Now().After(deadline) {
			return f, err
		}
		log.Warn("fleet buckets not opened yet; retrying", "err", err)
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(time.Second):
		}
	}
}

// fleetOpenWait bounds how long a member waits for the NATS cluster to
// take its buckets at start.
const fleetOpenWait = 30 * time.Second

func tryOpenFleetShared(ctx context.Context, cfg *config.Config, b *bus.Bus) (*FleetShared, error) {
	seen, err := cluster.OpenBucket(ctx, b.JetStream(), cluster.BucketOptions{
		Name:        cluster.SeenBucket(cfg.Bus.Stream),
		Description: "cakework-relay: webhook ids accepted by any member (ingest.seen_ttl)",
		TTL:         cfg.Ingest.SeenTTL,
		Replicas:    cfg.Bus.Replicas,
	})
	if err != nil {
		return nil, err
	}
	sk, err := cluster.OpenBucket(ctx, b.JetStream(), cluster.BucketOptions{
		Name:        cluster.SinksBucket(cfg.Bus.Stream),
		Description: "cakework-relay: sink records (attempt counts, Slack threads and floods, active members)",
		TTL:         cluster.SinkRecordTTL,
		Replicas:    cfg.Bus.Replicas,
	})
	if err != nil {
		return nil, err
	}
	return &FleetShared{Member: cfg.Cluster.MemberName(), Seen: seen, Sinks: sk, LeaseTTL: cfg.Cluster.LeaseTTL}, nil
}

// ingestFleet is ingest's Fleet for a member, nil for a single relay.
// A build seen by webhook is queued on this member's watch queue, from
// which the fleet moves it to the leader's (fleet.forwardQueuedWatches).
func ingestFleet(d *Core) ingest.Fleet {
	if d.Shared == nil {
		return nil
	}
	return &cluster.Ingest{Bus: d.Bus, IDs: d.Shared.Seen, Watch: func(ctx context.Context, id string) error {
		raw, err := state.EncodeQueuedWatch(state.KindBuild, id, state.Watch{Source: "webhook", AddedAt: clockOf(d).Now()})
		if err != nil {
			return err
		}
		return d.Store.Accept(ctx, func(tx *state.AcceptTx) error { return tx.QueueWatch(raw) })
	}}
}

func clockOf(d *Core) clock.Clock {
	if d.Clock == nil {
		return clock.Real{}
	}
	return d.Clock
}

// sinkRecords is where the sinks keep their records: the fleet's bucket
// for a member, the state store alone.
func sinkRecords(d *Core) sinks.Records {
	if d.Shared == nil {
		return sinks.BoltRecords(d.Store)
	}
	return sinks.KVRecords(d.Shared.Sinks)
}

// fleetMember is this member's name for the sinks ("" alone).
func fleetMember(d *Core) (string, time.Duration) {
	if d.Shared == nil {
		return "", 0
	}
	return d.Shared.Member, d.Shared.LeaseTTL
}
