package app

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cakework-relay/cakework-relay/internal/cluster"
	"github.com/cakework-relay/cakework-relay/internal/ingest"
	"github.com/cakework-relay/cakework-relay/internal/natstest"
)

// changeAnnounced runs under the fleet store's commit lock, so it reads the
// seen bucket under the commit's context: a commit whose context has ended
// does not wait for the read. (Left open by the session-7 review: it used
// its own 2 s timeout whatever the commit's context said.)
func TestChangeAnnouncedReadsUnderTheCommitsContext(t *testing.T) {
	srv := natstest.Start(t, server.Options{})
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	seen, err := cluster.OpenBucket(ctx, js, cluster.BucketOptions{Name: cluster.SeenBucket("TEST")})
	if err != nil {
		t.Fatal(err)
	}
	if err := (&cluster.Ingest{IDs: seen}).Remember(ctx, "ev-1", ingest.FleetChangeKey("ev-1")); err != nil {
		t.Fatal(err)
	}
	c := &Core{Shared: &FleetShared{Seen: seen}}

	if !changeAnnounced(ctx, c, "ev-1") {
		t.Fatal("a change the fleet's seen bucket holds: want announced")
	}
	if changeAnnounced(ctx, c, "ev-2") {
		t.Fatal("a change the bucket does not hold: want not announced")
	}
	ended, end := context.WithCancel(context.Background())
	end()
	if changeAnnounced(ended, c, "ev-1") {
		t.Fatal("the commit's context had ended, yet the seen bucket was read: changeAnnounced does not use the commit's context")
	}
}
