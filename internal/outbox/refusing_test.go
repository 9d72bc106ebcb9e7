package outbox

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/cakework-relay/cakework-relay/internal/bus"
	"github.com/cakework-relay/cakework-relay/internal/natstest"
	"github.com/cakework-relay/cakework-relay/internal/state"
)

// A JetStream that refuses to store for lack of room ("insufficient
// resources": here a server whose storage limit is 64 KiB, as on a nearly
// full disk) makes StoreRefusing (the "bus_store" readiness check) say so;
// the events stay in the outbox.
func TestStoreRefusingIsReported(t *testing.T) {
	srv := natstest.Start(t, server.Options{JetStreamMaxStore: 64 << 10})
	st, err := state.Open(state.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	b, err := bus.Open(context.Background(), bus.Options{URL: srv.ClientURL(), Stream: "CAKEWORK", SubjectPrefix: "cakework", DuplicateWindow: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close(context.Background()) })
	p := New(Options{Store: st, Bus: b, AckTimeout: 5 * time.Second})
	big := strings.Repeat("x", 4<<10)
	for i := range 40 { // 160 KiB
		if err := st.Update(context.Background(), func(tx *state.Tx) error {
			return tx.Enqueue(fmt.Sprintf("cakework.vm.v%d.started", i), fmt.Sprintf("evt-%d", i), []byte(big))
		}); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.StoreRefusing(); err != nil {
		t.Fatalf("refusing before any publish: %v", err)
	}
	var perr error
	for range 10 {
		if _, perr = p.PublishOnce(context.Background()); perr != nil {
			break
		}
	}
	if perr == nil {
		t.Fatal("160 KiB stored under a 64 KiB limit")
	}
	err = p.StoreRefusing()
	t.Log(err)
	if !errors.Is(err, ErrStoreRefusing) || !strings.Contains(err.Error(), "is the disk holding the stream full?") || !strings.Contains(err.Error(), "events wait in the outbox") {
		t.Fatalf("StoreRefusing() = %v (publish: %v)", err, perr)
	}
	if st.OutboxDepth() == 0 {
		t.Fatal("refused events left the outbox")
	}
}
