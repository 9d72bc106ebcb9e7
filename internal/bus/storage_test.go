package bus

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cakework-relay/cakework-relay/internal/clock"
)

// openStorageBus is an embedded bus on the fake clock, with only the
// storage check waiting on it.
func openStorageBus(t *testing.T, clk *clock.Fake, listen string) *Bus {
	t.Helper()
	b, err := Open(context.Background(), Options{StoreDir: t.TempDir(), SubjectPrefix: "cakework", Stream: "CAKEWORK",
		DuplicateWindow: time.Minute, MaxAge: time.Hour, Clock: clk, CheckInterval: -1,
		EmbeddedListen: listen, EmbeddedToken: testSubToken, ReservedConsumers: []string{testSinkCons}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close(context.Background()) })
	return b
}

// jetStreamOff does what nats-server does when a write fails for lack of
// space (handleOutOfSpace): it shuts the server's JetStream down.
func jetStreamOff(t *testing.T, b *Bus) {
	t.Helper()
	if err := b.server().ShutdownJetStream(); err != nil {
		t.Fatal(err)
	}
	if err := b.Ready(); !errors.Is(err, ErrStorageOff) || !strings.Contains(err.Error(), "is the disk holding "+b.opts.StoreDir+" full?") ||
		!strings.Contains(err.Error(), "restarts its embedded NATS server") {
		t.Fatalf("Ready() with JetStream off = %v", err)
	}
}

func streamMsgs(t *testing.T, js jetstream.JetStream) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, "CAKEWORK")
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

// When nats-server turns the embedded JetStream off (a full disk), Ready
// says so; once a probe write succeeds on the next check (injected clock),
// the embedded server is restarted in the process: the same Bus publishes
// again, what was stored is still there, the sink's pull iterator that
// kept pulling through it gets the new event, and a TCP subscriber
// reconnects with the same credentials and rights.
func TestEmbeddedServerRestartsOnceTheDiskHasRoom(t *testing.T) {
	clk := clock.NewFake(time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC))
	b := openStorageBus(t, clk, "127.0.0.1:0")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := b.Publish(ctx, "cakework.build.b1.failed", "id-1", []byte(`{"id":"id-1"}`), nil); err != nil {
		t.Fatal(err)
	}
	url := b.ClientURL()

	// A sink: its durable pull iterator runs through the whole outage.
	cons, err := b.EnsureConsumer(ctx, ConsumerOptions{Durable: testSinkCons, DeliverAll: true})
	if err != nil {
		t.Fatal(err)
	}
	iter, err := cons.Messages()
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 16)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			m, err := iter.Next()
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return
			}
			if err != nil {
				continue
			}
			m.Ack()
			got <- string(m.Data())
		}
	}()
	// Readers of the server while it is swapped (the race detector).
	stopReading := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stopReading:
				return
			default:
			}
			_ = b.Ready()
			_ = b.ClientURL()
			_ = b.EmbeddedRestarts()
		}
	}()
	t.Cleanup(func() { iter.Stop(); close(stopReading); wg.Wait() })
	if m := <-got; m != `{"id":"id-1"}` {
		t.Fatalf("sink got %s", m)
	}

	// A subscriber over TCP, reconnecting by itself.
	reconnected := make(chan struct{}, 1)
	sub, err := nats.Connect(url, nats.UserInfo(UserSubscriber, testSubToken), nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond),
		nats.ReconnectHandler(func(*nats.Conn) { reconnected <- struct{}{} }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sub.Close)
	subJS, _ := jetstream.New(sub)
	core, err := sub.SubscribeSync("cakework.>")
	if err != nil {
		t.Fatal(err)
	}

	jetStreamOff(t, b)
	pctx, pcancel := context.WithTimeout(ctx, 500*time.Millisecond)
	if _, err := b.Publish(pctx, "cakework.build.b2.failed", "id-2", []byte(`{"id":"id-2"}`), nil); err == nil {
		t.Fatal("published while JetStream is off")
	}
	pcancel()

	// The next check, on the injected clock, finds room and restarts it.
	for clk.Waiters() == 0 {
		time.Sleep(time.Millisecond)
	}
	clk.Advance(storageCheck)
	for b.EmbeddedRestarts() == 0 || b.Ready() != nil {
		if ctx.Err() != nil {
			t.Fatalf("not back: restarts %d, Ready() = %v", b.EmbeddedRestarts(), b.Ready())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := b.EmbeddedRestarts(); n != 1 {
		t.Fatalf("restarts = %d", n)
	}
	if b.ClientURL() != url {
		t.Fatalf("ClientURL %s, was %s", b.ClientURL(), url)
	}

	// The same Bus publishes again; the event from before is still there.
	if _, err := b.Publish(ctx, "cakework.build.b2.failed", "id-2", []byte(`{"id":"id-2"}`), nil); err != nil {
		t.Fatalf("publish after the restart: %v", err)
	}
	if n := streamMsgs(t, b.JetStream()); n != 2 {
		t.Fatalf("stream holds %d messages, want 2", n)
	}
	select {
	case m := <-got:
		if m != `{"id":"id-2"}` {
			t.Fatalf("sink got %s after the restart", m)
		}
	case <-ctx.Done():
		t.Fatal("the sink's pull iterator got nothing after the restart")
	}

	// The subscriber reads again, with the same rights.
	select {
	case <-reconnected:
	case <-ctx.Done():
		t.Fatal("the TCP subscriber did not reconnect")
	}
	if err := sub.Flush(); err != nil { // its subscription is resent
		t.Fatal(err)
	}
	if _, err := b.Publish(ctx, "cakework.build.b3.failed", "id-3", []byte(`{"id":"id-3"}`), nil); err != nil {
		t.Fatal(err)
	}
	for {
		m, err := core.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatalf("core subscription after the restart: %v", err)
		}
		if m.Subject == "cakework.build.b3.failed" {
			break
		}
	}
	s, err := subJS.Stream(ctx, "CAKEWORK")
	if err != nil {
		t.Fatal("subscriber's stream info after the restart:", err)
	}
	if m, err := s.GetMsg(ctx, 1); err != nil || string(m.Data) != `{"id":"id-1"}` {
		t.Fatalf("subscriber's get after the restart: %v", err)
	}
	if _, err := subJS.Publish(shortCtx(t), "cakework.build.forged.failed", []byte(`{}`)); err == nil {
		t.Fatal("the subscriber published into the stream after the restart")
	}
	if nc, err := nats.Connect(url, nats.UserInfo(UserRelay, b.relayPW), nats.MaxReconnects(0)); err == nil {
		nc.Close()
		t.Fatal("the relay user connected over TCP after the restart")
	}
	if n := streamMsgs(t, b.JetStream()); n != 3 {
		t.Fatalf("stream holds %d messages, want 3", n)
	}
}

// A restart that fails (here JetStream cannot open its store) is reported
// by Ready with the server's reason; the relay stays connected to a server
// without JetStream, and the next restart waits for its backoff on the
// injected clock, then succeeds.
func TestEmbeddedServerRestartFailureIsReportedAndRetried(t *testing.T) {
	clk := clock.NewFake(time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC))
	b := openStorageBus(t, clk, "")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := b.Publish(ctx, "cakework.build.b1.failed", "id-1", []byte(`{}`), nil); err != nil {
		t.Fatal(err)
	}
	jsDir := b.server().JetStreamConfig().StoreDir
	jetStreamOff(t, b)

	// The disk still full: the probe fails, and nothing is restarted.
	if os.Geteuid() != 0 { // root writes anyway
		if err := os.Chmod(b.opts.StoreDir, 0o500); err != nil {
			t.Fatal(err)
		}
		b.checkStorage(ctx)
		if err := os.Chmod(b.opts.StoreDir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := b.Ready(); !errors.Is(err, ErrStorageOff) || !strings.Contains(err.Error(), "probe write") || b.EmbeddedRestarts() != 0 {
			t.Fatalf("Ready() after a failed probe = %v", err)
		}
	}

	// The probe succeeds but JetStream's store cannot be opened.
	if err := os.Rename(jsDir, jsDir+".aside"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(jsDir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	b.checkStorage(ctx)
	err := b.Ready()
	if !errors.Is(err, ErrStorageOff) || !strings.Contains(err.Error(), "restart of the embedded NATS server failed") ||
		!strings.Contains(err.Error(), "storage directory is not a directory") || !strings.Contains(err.Error(), "next attempt at 2024-05-01T12:00:30Z") {
		t.Fatalf("Ready() after a failed restart = %v", err)
	}
	if st := b.Conn().Status(); st != nats.CONNECTED {
		t.Fatalf("the relay's connection is %s, want connected to the server without JetStream", st)
	}
	if err := os.Remove(jsDir); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(jsDir+".aside", jsDir); err != nil {
		t.Fatal(err)
	}

	// The next check is inside the backoff: no attempt.
	clk.Advance(storageCheck)
	b.checkStorage(ctx)
	if b.EmbeddedRestarts() != 0 || !errors.Is(b.Ready(), ErrStorageOff) {
		t.Fatalf("restarted inside the backoff: %d, %v", b.EmbeddedRestarts(), b.Ready())
	}
	// After it: restarted, with what was stored.
	clk.Advance(20 * time.Second)
	b.checkStorage(ctx)
	if err := b.Ready(); err != nil || b.EmbeddedRestarts() != 1 {
		t.Fatalf("after the backoff: restarts %d, Ready() = %v", b.EmbeddedRestarts(), err)
	}
	if _, err := b.Publish(ctx, "cakework.build.b2.failed", "id-2", []byte(`{}`), nil); err != nil {
		t.Fatalf("publish after the restart: %v", err)
	}
	if n := streamMsgs(t, b.JetStream()); n != 2 {
		t.Fatalf("stream holds %d messages, want 2", n)
	}
}
