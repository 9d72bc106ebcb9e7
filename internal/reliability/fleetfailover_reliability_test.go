package reliability

import (
	"context"
	"testing"
	"time"
)

// TestFleetFailover is issue 17's CI form: 3 relays on 3 NATS nodes take
// webhooks round-robin while the Slack sink's active member is killed and
// the callback sink's active member is frozen and thawed.
func TestFleetFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("runs 3 nats-servers and 3 relays")
	}
	o := FleetOptions{
		RelayBin: relayBin, NATSBin: natsBin, Dir: t.TempDir(),
		Load: 3 * time.Second, Freeze: 6 * time.Second, Settle: 40 * time.Second, Logf: t.Logf,
	}
	res, err := FleetFailover(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Log(res)
	if res.Acked == 0 {
		t.Error("no webhook was acknowledged")
	}
	errorEach(t, res.Problems)
}
