package bus

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

const (
	testSubToken  = "subscriber-token-0123456789"
	testCtlToken  = "control-token-0123456789"
	testSinkCons  = "sink_app"
	deniedTimeout = 400 * time.Millisecond
)

// authBus is an embedded bus on a random loopback port with a subscriber
// and a control token, the sink consumer sink_app, one event and one dead
// letter, and the relay's own answers to the steering subjects (counted).
type authBus struct {
	*Bus
	steered atomic.Int64
}

func openAuthBus(t *testing.T) *authBus {
	t.Helper()
	b, err := Open(context.Background(), Options{
		EmbeddedListen:       "127.0.0.1:0",
		EmbeddedToken:        testSubToken,
		EmbeddedControlToken: testCtlToken,
		ReservedConsumers:    []string{testSinkCons},
		StoreDir:             t.TempDir(),
		SubjectPrefix:        "cakework",
		Stream:               "CAKEWORK",
		DuplicateWindow:      time.Minute,
		MaxAge:               time.Hour,
		MACKey:               []byte("test key"),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close(context.Background()) })
	ab := &authBus{Bus: b}
	ctx := context.Background()
	if _, err := b.EnsureConsumer(ctx, ConsumerOptions{Durable: testSinkCons, DeliverAll: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Publish(ctx, "cakework.build.b1.succeeded", "ev-1", []byte(`{"id":"ev-1"}`), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Publish(ctx, DLQSubject("app"), "dl-1", []byte(`{"id":"ev-0"}`), nats.Header{HdrDLQSink: []string{"app"}}); err != nil {
		t.Fatal(err)
	}
	for _, subj := range ControlSubjects {
		if _, err := b.Conn().Subscribe(subj, func(m *nats.Msg) {
			if !FromClient(m) {
				return // as the relay's handlers do
			}
			ab.steered.Add(1)
			m.Respond([]byte(`{"ok":true}`))
		}); err != nil {
			t.Fatal(err)
		}
	}
	b.Conn().Flush()
	return ab
}

// client connects as user/password with a plain nats.go client over TCP
// and records the permission errors the server sends back.
type client struct {
	nc   *nats.Conn
	js   jetstream.JetStream
	mu   sync.Mutex
	errs []string
}

func connect(t *testing.T, b *Bus, user, pass string) *client {
	t.Helper()
	c := &client{}
	nc, err := nats.Connect(b.ClientURL(), nats.UserInfo(user, pass), nats.MaxReconnects(0),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			c.mu.Lock()
			c.errs = append(c.errs, err.Error())
			c.mu.Unlock()
		}))
	if err != nil {
		t.Fatalf("connect as %s: %v", user, err)
	}
	t.Cleanup(nc.Close)
	c.nc = nc
	c.js, _ = jetstream.New(nc)
	return c
}

func shortCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), deniedTimeout)
	t.Cleanup(cancel)
	return ctx
}

func (b *authBus) msgs(t *testing.T, stream string) uint64 {
	t.Helper()
	s, err := b.JetStream().Stream(context.Background(), stream)
	if err != nil {
		t.Fatalf("stream %s: %v", stream, err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

func TestAnonymousAndWrongCredentialsAreRefused(t *testing.T) {
	b := openAuthBus(t)
	for name, opts := range map[string][]nats.Option{
		"anonymous":                 {},
		"subscriber token as token": {nats.Token(testSubToken)},
		"wrong password":            {nats.UserInfo(UserSubscriber, "guess")},
		// The relay's own user exists only in-process: its password does
		// not open a TCP connection.
		"relay user over TCP": {nats.UserInfo(UserRelay, b.relayPW)},
	} {
		nc, err := nats.Connect(b.ClientURL(), append(opts, nats.MaxReconnects(0))...)
		if err == nil {
			nc.Close()
			t.Errorf("%s: connected", name)
		} else if !errors.Is(err, nats.ErrAuthorization) && !strings.Contains(strings.ToLower(err.Error()), "authorization") {
			t.Errorf("%s: %v, want an authorization error", name, err)
		}
	}
}

func TestSubscriberReads(t *testing.T) {
	b := openAuthBus(t)
	c := connect(t, b.Bus, UserSubscriber, testSubToken)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	// Core subscription to <prefix>.>.
	sub, err := c.nc.SubscribeSync("cakework.>")
	if err != nil {
		t.Fatal(err)
	}
	c.nc.Flush()
	if _, err := b.Publish(ctx, "cakework.vm.v1.started", "ev-2", []byte(`{"id":"ev-2"}`), nil); err != nil {
		t.Fatal(err)
	}
	if m, err := sub.NextMsg(2 * time.Second); err != nil || m.Subject != "cakework.vm.v1.started" {
		t.Fatalf("core subscription: %v", err)
	}
	// Stream info and get a message.
	s, err := c.js.Stream(ctx, "CAKEWORK")
	if err != nil {
		t.Fatal("stream info:", err)
	}
	if m, err := s.GetMsg(ctx, 1); err != nil || string(m.Data) != `{"id":"ev-1"}` {
		t.Fatalf("get message: %v", err)
	}
	// A durable consumer of its own: create, fetch, ack, delete.
	cons, err := c.js.CreateOrUpdateConsumer(ctx, "CAKEWORK", jetstream.ConsumerConfig{Durable: "mine", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal("own durable:", err)
	}
	m, err := cons.Next(jetstream.FetchMaxWait(2 * time.Second))
	if err != nil {
		t.Fatal("own durable fetch:", err)
	}
	if err := m.DoubleAck(ctx); err != nil {
		t.Fatal("own durable ack:", err)
	}
	if err := c.js.DeleteConsumer(ctx, "CAKEWORK", "mine"); err != nil {
		t.Fatal("delete own durable:", err)
	}
	// An ordered consumer (what `relay tail` uses).
	oc, err := c.js.OrderedConsumer(ctx, "CAKEWORK", jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal("ordered consumer:", err)
	}
	if _, err := oc.Next(jetstream.FetchMaxWait(2 * time.Second)); err != nil {
		t.Fatal("ordered consumer fetch:", err)
	}
}

func TestSubscriberCannotWriteDeleteOrSteer(t *testing.T) {
	b := openAuthBus(t)
	c := connect(t, b.Bus, UserSubscriber, testSubToken)
	events, dead := b.msgs(t, "CAKEWORK"), b.msgs(t, "CAKEWORK_DLQ")

	for _, tc := range []struct {
		name string
		try  func(ctx context.Context) error
	}{
		{"publish an event", func(ctx context.Context) error {
			_, err := c.js.Publish(ctx, "cakework.build.b1.succeeded", []byte(`{"imageId":"ATTACKER"}`), jetstream.WithMsgID("ev-9"))
			return err
		}},
		{"core publish an event", func(ctx context.Context) error {
			c.nc.Publish("cakework.build.b2.succeeded", []byte(`{}`))
			return c.nc.FlushWithContext(ctx)
		}},
		{"publish a dead letter", func(ctx context.Context) error {
			_, err := c.js.Publish(ctx, "relay.dlq.app", []byte(`{}`))
			return err
		}},
		{"watch a build", func(ctx context.Context) error {
			_, err := c.nc.RequestWithContext(ctx, "relay.watch.build", []byte("b-junk"))
			return err
		}},
		{"signal activity", func(ctx context.Context) error {
			_, err := c.nc.RequestWithContext(ctx, "relay.vm.activity", []byte(`{"id":"v1"}`))
			return err
		}},
		{"delete the stream", func(ctx context.Context) error { return c.js.DeleteStream(ctx, "CAKEWORK") }},
		{"delete the DLQ stream", func(ctx context.Context) error { return c.js.DeleteStream(ctx, "CAKEWORK_DLQ") }},
		{"purge the stream", func(ctx context.Context) error {
			s, err := b.JetStream().Stream(ctx, "CAKEWORK") // the handle, read by the relay
			if err != nil {
				return nil
			}
			_, err = c.nc.RequestWithContext(ctx, "$JS.API.STREAM.PURGE."+s.CachedInfo().Config.Name, nil)
			return err
		}},
		{"change the stream", func(ctx context.Context) error {
			_, err := c.js.UpdateStream(ctx, jetstream.StreamConfig{Name: "CAKEWORK", Subjects: []string{"cakework.>"}, MaxAge: time.Second})
			return err
		}},
		{"delete a message", func(ctx context.Context) error {
			_, err := c.nc.RequestWithContext(ctx, "$JS.API.STREAM.MSG.DELETE.CAKEWORK", []byte(`{"seq":1}`))
			return err
		}},
		{"delete the sink's consumer", func(ctx context.Context) error { return c.js.DeleteConsumer(ctx, "CAKEWORK", testSinkCons) }},
		{"change the sink's consumer", func(ctx context.Context) error {
			_, err := c.js.UpdateConsumer(ctx, "CAKEWORK", jetstream.ConsumerConfig{Durable: testSinkCons, AckPolicy: jetstream.AckExplicitPolicy, DeliverPolicy: jetstream.DeliverAllPolicy, FilterSubject: "cakework.nothing"})
			return err
		}},
		{"pull from the sink's consumer", func(ctx context.Context) error {
			_, err := c.nc.RequestWithContext(ctx, "$JS.API.CONSUMER.MSG.NEXT.CAKEWORK."+testSinkCons, []byte(`{"batch":1,"expires":200000000}`))
			return err
		}},
		{"steer through a push consumer delivering the stream to a control subject", func(ctx context.Context) error {
			for i, subj := range ControlSubjects {
				if _, err := c.js.CreateOrUpdateConsumer(ctx, "CAKEWORK", jetstream.ConsumerConfig{
					Durable: fmt.Sprintf("push%d", i), DeliverSubject: subj, AckPolicy: jetstream.AckNonePolicy, DeliverPolicy: jetstream.DeliverAllPolicy,
				}); err != nil {
					t.Logf("push consumer to %s: %v", subj, err)
				}
			}
			time.Sleep(300 * time.Millisecond) // deliveries reach the relay's handlers, which ignore them
			return errors.New("checked below: nothing steered")
		}},
		{"read the DLQ stream", func(ctx context.Context) error {
			_, err := c.js.Stream(ctx, "CAKEWORK_DLQ")
			return err
		}},
	} {
		if err := tc.try(shortCtx(t)); err == nil && !strings.HasPrefix(tc.name, "core publish") {
			t.Errorf("%s: allowed", tc.name)
		}
	}
	c.nc.Flush()

	ctx := context.Background()
	if n := b.msgs(t, "CAKEWORK"); n != events {
		t.Errorf("event stream has %d messages, had %d: a subscriber wrote or removed some", n, events)
	}
	if n := b.msgs(t, "CAKEWORK_DLQ"); n != dead {
		t.Errorf("DLQ has %d messages, had %d", n, dead)
	}
	ci, err := b.JetStream().Consumer(ctx, "CAKEWORK", testSinkCons)
	if err != nil {
		t.Fatal("the sink's consumer is gone:", err)
	}
	if info, _ := ci.Info(ctx); info.Config.FilterSubject != "" || info.NumPending != events || info.NumAckPending != 0 {
		t.Errorf("the sink's consumer changed: filter %q, pending %d, ack pending %d", info.Config.FilterSubject, info.NumPending, info.NumAckPending)
	}
	if n := b.steered.Load(); n != 0 {
		t.Errorf("the relay answered %d steering requests from a subscriber", n)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.errs) == 0 || !strings.Contains(strings.Join(c.errs, "\n"), "Permissions Violation") {
		t.Errorf("the server reported no permissions violation: %q", c.errs)
	}
}

func TestControlUserSteers(t *testing.T) {
	b := openAuthBus(t)
	c := connect(t, b.Bus, UserControl, testCtlToken)
	for _, subj := range []string{"relay.watch.build", "relay.vm.activity"} {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		m, err := c.nc.RequestWithContext(ctx, subj, []byte(`{"id":"v1"}`))
		cancel()
		if err != nil || string(m.Data) != `{"ok":true}` {
			t.Errorf("%s: %v", subj, err)
		}
	}
	// It reads like a subscriber, and writes no more than one.
	if _, err := c.js.Stream(shortCtx(t), "CAKEWORK"); err != nil {
		t.Error("control user cannot read the stream:", err)
	}
	if _, err := c.js.Publish(shortCtx(t), "cakework.build.b1.failed", []byte(`{}`)); err == nil {
		t.Error("control user published an event")
	}
}

func TestNoControlTokenNobodySteersOverTCP(t *testing.T) {
	b, err := Open(context.Background(), Options{EmbeddedListen: "127.0.0.1:0", EmbeddedToken: testSubToken, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(context.Background())
	if nc, err := nats.Connect(b.ClientURL(), nats.UserInfo(UserControl, ""), nats.MaxReconnects(0)); err == nil {
		nc.Close()
		t.Fatal("a control user without a control token connected")
	}
}
