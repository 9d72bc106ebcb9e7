package app

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
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
	// Key is the fleet's install key and event id scheme: every member
	// signs with it and derives the same ids (fleetInstallKey).
	Key installKey
}

// openFleetShared opens (creating when missing) the fleet's ingest and
// sinks buckets, with the streams' replicas.
//
// A NATS cluster that is still forming (no JetStream meta leader yet, or
// too few peers for the replicas) refuses them for a moment: that is
// retried for up to fleetOpenWait, then the start fails with the reason.
func openFleetShared(ctx context.Context, cfg *config.Config, b *bus.Bus, local installKey, log *slog.Logger) (*FleetShared, error) {
	deadline := time.Now().Add(fleetOpenWait)
	for {
		f, err := tryOpenFleetShared(ctx, cfg, b, local)
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

func tryOpenFleetShared(ctx context.Context, cfg *config.Config, b *bus.Bus, local installKey) (*FleetShared, error) {
	key, err := fleetInstallKey(ctx, cfg, b, local)
	if err != nil {
		return nil, err
	}
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
	return &FleetShared{Member: cfg.Cluster.MemberName(), Seen: seen, Sinks: sk, LeaseTTL: cfg.Cluster.LeaseTTL, Key: key}, nil
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

// installRecord is the fleet's install key in its bucket.
type installRecord struct {
	Key string `json:"key"` // hex
	IDs string `json:"ids"` // keyed | legacy
}

// fleetInstallKey is the fleet's install key and event id scheme, kept in
// the fleet's bucket (key "install"): the first member to start records
// its own, and every other takes it, so all sign alike and derive the
// same event ids. A member whose own differs says so once (its data_dir's
// files are not used).
//
// The bucket holds a secret: on an external NATS, give subscribers read
// rights on the events stream only, never on $KV.RELAY_<stream> (README).
func fleetInstallKey(ctx context.Context, cfg *config.Config, b *bus.Bus, local installKey) (installKey, error) {
	kv, err := cluster.OpenBucket(ctx, b.JetStream(), cluster.BucketOptions{
		Name:        cluster.Bucket(cfg.Bus.Stream),
		Description: "cakework-relay fleet: the lease, the leader's knowledge and the install key",
		Replicas:    cfg.Bus.Replicas,
	})
	if err != nil {
		return installKey{}, err
	}
	mine, _ := json.Marshal(installRecord{Key: hex.EncodeToString(local.mac), IDs: local.scheme})
	if _, err := kv.Create(ctx, "install", mine); err == nil {
		return local, nil
	} else if !errors.Is(err, jetstream.ErrKeyExists) {
		return installKey{}, fmt.Errorf("cluster: record the fleet's install key: %w", err)
	}
	e, err := kv.Get(ctx, "install")
	if err != nil {
		return installKey{}, fmt.Errorf("cluster: read the fleet's install key: %w", err)
	}
	var rec installRecord
	err = json.Unmarshal(e.Value(), &rec)
	key, kerr := hex.DecodeString(rec.Key)
	if err != nil || kerr != nil || len(key) < 16 || rec.IDs != "keyed" && rec.IDs != "legacy" {
		return installKey{}, fmt.Errorf("cluster: the fleet's install key in bucket %s is unreadable; restore it, or delete the key \"install\" while no member runs (events published before then no longer verify)", cluster.Bucket(cfg.Bus.Stream))
	}
	return newInstallKey(key, rec.IDs), nil
}
