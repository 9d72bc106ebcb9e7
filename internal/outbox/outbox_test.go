package outbox

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cakework-relay/cakework-relay/internal/bus"
	"github.com/cakework-relay/cakework-relay/internal/state"
)

// relayDir opens a store and an embedded bus on one data dir, as the daemon
// does, and returns a func that "crashes" them (closes without draining).
func openAll(t *testing.T, dir string) (*state.Store, *bus.Bus, func()) {
	t.Helper()
	st, err := state.Open(state.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	b, err := bus.Open(context.Background(), bus.Options{StoreDir: filepath.Join(dir, "jetstream"), Stream: "CAKEWORK", SubjectPrefix: "cakework", DuplicateWindow: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	stop := func() {
		b.Close(context.Background())
		st.Close()
	}
	t.Cleanup(stop)
	return st, b, stop
}

func enqueue(t *testing.T, st *state.Store, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		err := st.Update(context.Background(), func(tx *state.Tx) error {
			return tx.Enqueue(fmt.Sprintf("cakework.vm.v%d.started", i%3), fmt.Sprintf("evt-%d", i), []byte(fmt.Sprint(i)))
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

func streamMsgs(t *testing.T, b *bus.Bus) []string {
	t.Helper()
	ctx := context.Background()
	c, err := b.JetStream().OrderedConsumer(ctx, "CAKEWORK", jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	s, _ := b.JetStream().Stream(ctx, "CAKEWORK")
	info, _ := s.Info(ctx)
	var out []string
	for i := uint64(0); i < info.State.Msgs; i++ {
		m, err := c.Next(jetstream.FetchMaxWait(2 * time.Second))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(m.Data()))
	}
	return out
}

func wantInOrder(t *testing.T, got []string, n int) {
	t.Helper()
	if len(got) != n {
		t.Fatalf("%d messages on the stream, want %d", len(got), n)
	}
	for i, g := range got {
		if g != fmt.Sprint(i) {
			t.Fatalf("message %d is %q", i, g)
		}
	}
}

func TestEntrySurvivesCrashBeforePublish(t *testing.T) {
	dir := t.TempDir()
	st, _, crash := openAll(t, dir)
	enqueue(t, st, 50)
	crash() // committed, never published

	st, b, _ := openAll(t, dir)
	if st.OutboxDepth() != 50 {
		t.Fatalf("depth after restart %d", st.OutboxDepth())
	}
	r := New(Options{Store: st, Bus: b, Batch: 7})
	if err := r.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	wantInOrder(t, streamMsgs(t, b), 50)
	if st.OutboxDepth() != 0 {
		t.Fatal("outbox not empty after drain")
	}
}

func TestCrashAfterAckBeforeDeletePublishesOnce(t *testing.T) {
	dir := t.TempDir()
	st, b, crash := openAll(t, dir)
	enqueue(t, st, 20)
	// Publish every entry, as the publisher would, but crash before the
	// outbox delete.
	entries, _ := st.PeekOutbox(100)
	for _, e := range entries {
		if _, err := b.Publish(context.Background(), e.Subject, e.MsgID, e.Payload, nil); err != nil {
			t.Fatal(err)
		}
	}
	crash()

	st, b, _ = openAll(t, dir)
	r := New(Options{Store: st, Bus: b})
	if err := r.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	wantInOrder(t, streamMsgs(t, b), 20)
}

func TestRunPublishesOnNotify(t *testing.T) {
	st, b, _ := openAll(t, t.TempDir())
	r := New(Options{Store: st, Bus: b, Poll: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	enqueue(t, st, 5)
	deadline := time.Now().Add(5 * time.Second)
	for st.OutboxDepth() > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	wantInOrder(t, streamMsgs(t, b), 5)
}

func TestBusDownKeepsEntries(t *testing.T) {
	st, b, _ := openAll(t, t.TempDir())
	enqueue(t, st, 3)
	b.Close(context.Background())
	r := New(Options{Store: st, Bus: b, AckTimeout: 200 * time.Millisecond})
	if _, err := r.PublishOnce(context.Background()); err == nil {
		t.Fatal("publish to a closed bus succeeded")
	}
	if st.OutboxDepth() != 3 || r.LastError() == nil {
		t.Fatalf("depth %d, last error %v", st.OutboxDepth(), r.LastError())
	}
}
