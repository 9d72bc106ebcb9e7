package bus

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func openEmbedded(t *testing.T, listen string) *Bus {
	t.Helper()
	b, err := Open(context.Background(), Options{
		EmbeddedListen:  listen,
		EmbeddedToken:   "sub-token",
		StoreDir:        t.TempDir(),
		SubjectPrefix:   "cakework",
		Stream:          "CAKEWORK",
		DuplicateWindow: time.Minute,
		MaxAge:          time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close(context.Background()) })
	return b
}

func TestEmbeddedStreamsAndDedup(t *testing.T) {
	b := openEmbedded(t, "127.0.0.1:0")
	ctx := context.Background()
	if err := b.Ready(); err != nil {
		t.Fatal(err)
	}
	s, err := b.JetStream().Stream(ctx, "CAKEWORK")
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.CachedInfo().Config
	if cfg.Subjects[0] != "cakework.>" || cfg.Storage != jetstream.FileStorage || cfg.Duplicates != time.Minute || cfg.MaxAge != time.Hour {
		t.Fatalf("stream config: %+v", cfg)
	}
	if _, err := b.JetStream().Stream(ctx, "CAKEWORK_DLQ"); err != nil {
		t.Fatal("no DLQ stream:", err)
	}
	a1, err := b.Publish(ctx, "cakework.build.b1.failed", "id-1", []byte(`{}`), nil)
	if err != nil || a1.Duplicate {
		t.Fatalf("first publish: %v %+v", err, a1)
	}
	a2, err := b.Publish(ctx, "cakework.build.b1.failed", "id-1", []byte(`{}`), nil)
	if err != nil || !a2.Duplicate {
		t.Fatalf("repeat not flagged duplicate: %v %+v", err, a2)
	}
	info, _ := s.Info(ctx)
	if info.State.Msgs != 1 {
		t.Fatalf("%d messages stored, want 1", info.State.Msgs)
	}
	// Another process can reach the embedded server over TCP, with the
	// subscriber token.
	nc, err := nats.Connect(b.ClientURL(), nats.UserInfo(UserSubscriber, "sub-token"))
	if err != nil {
		t.Fatal(err)
	}
	nc.Close()
}

func TestEmbeddedInProcessOnly(t *testing.T) {
	b := openEmbedded(t, "")
	if b.ClientURL() != "" {
		t.Fatalf("in-process server has a client URL %q", b.ClientURL())
	}
	if _, err := b.Publish(context.Background(), "cakework.vm.v.started", "x", nil, nil); err != nil {
		t.Fatal(err)
	}
}

func TestPortInUseIsOneClearError(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, err = Open(context.Background(), Options{EmbeddedListen: l.Addr().String(), StoreDir: t.TempDir(), ReadyTimeout: 2 * time.Second})
	if err == nil || !strings.Contains(err.Error(), "port in use") || !strings.Contains(err.Error(), "bus.embedded.listen") {
		t.Fatalf("got %v", err)
	}
}

func TestConsumerKeepsPositionAcrossUpdate(t *testing.T) {
	b := openEmbedded(t, "")
	ctx := context.Background()
	c, err := b.EnsureConsumer(ctx, ConsumerOptions{Durable: "sink-a", FilterSubjects: []string{"cakework.build.>"}, DeliverAll: true})
	if err != nil {
		t.Fatal(err)
	}
	b.Publish(ctx, "cakework.build.b1.created", "1", []byte("1"), nil)
	b.Publish(ctx, "cakework.vm.v1.started", "2", []byte("2"), nil)
	b.Publish(ctx, "cakework.build.b1.failed", "3", []byte("3"), nil)
	msg, err := c.Next(jetstream.FetchMaxWait(2 * time.Second))
	if err != nil || string(msg.Data()) != "1" {
		t.Fatalf("first: %v", err)
	}
	msg.Ack()
	// Updating filters keeps the durable's position.
	c, err = b.EnsureConsumer(ctx, ConsumerOptions{Durable: "sink-a", FilterSubjects: []string{"cakework.build.>", "cakework.vm.>"}})
	if err != nil {
		t.Fatal(err)
	}
	msg, err = c.Next(jetstream.FetchMaxWait(2 * time.Second))
	if err != nil || string(msg.Data()) != "2" {
		t.Fatalf("after update: %v %q", err, msg)
	}
}

func TestCloseTwice(t *testing.T) {
	b := openEmbedded(t, "")
	if err := b.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if b.Ready() == nil {
		t.Fatal("closed bus reports ready")
	}
}

func TestConnectErrorHidesCredentials(t *testing.T) {
	for _, u := range []string{
		"nats://alice:s3cret@127.0.0.1:1,nats://bob:s3cret@127.0.0.1:2",
		"nats://tok3n-s3cret@127.0.0.1:bad",
		"nats://alice:s3cret@host:bad,nats://bob:s3cret@host:bad",
	} {
		b, err := Open(context.Background(), Options{URL: u, ReadyTimeout: 200 * time.Millisecond})
		if err == nil {
			b.Close(context.Background()) // connects lazily; nothing printed
			continue
		}
		if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("error quotes a credential: %v", err)
		}
	}
	if got := redactURL("nats://alice:s3cret@a:4222, nats://bob:s3cret@b:4222"); strings.Contains(got, "s3cret") {
		t.Errorf("redactURL: %s", got)
	}
}
