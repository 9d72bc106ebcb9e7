package bus

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cakework-relay/cakework-relay/internal/backoff"
	"github.com/cakework-relay/cakework-relay/internal/clock"
	"github.com/cakework-relay/cakework-relay/internal/health"
)

// DLQSubjectPrefix is where dead letters go: relay.dlq.<sink>.
const DLQSubjectPrefix = "relay.dlq"

// Dead-letter headers.
const (
	HdrDLQSink     = "Relay-Sink"
	HdrDLQError    = "Relay-Error"
	HdrDLQAttempts = "Relay-Attempts"
	HdrDLQEventID  = "Relay-Event-Id"
	HdrDLQSubject  = "Relay-Subject"
	HdrDLQTime     = "Relay-Failed-At"
)

// Options configure Open.
type Options struct {
	// URL of an external NATS; empty runs the embedded server.
	URL       string
	CredsFile string
	CAFile    string
	CertFile  string
	KeyFile   string

	// EmbeddedListen is host:port for the embedded server; empty means
	// in-process connections only.
	EmbeddedListen string
	// EmbeddedToken is the subscriber's password (user "subscriber"):
	// read-only rights, see subscriberPermissions. Empty: no subscriber
	// can connect.
	EmbeddedToken string
	// EmbeddedControlToken is the control user's password: a subscriber
	// that may also publish the ControlSubjects. Empty: nobody over TCP
	// may.
	EmbeddedControlToken string
	// ReservedConsumers are the durable names of the sinks' consumers on
	// the event stream: subscribers may not create, pull from, ack or
	// delete them.
	ReservedConsumers []string
	// StoreDir holds the embedded JetStream store (data_dir/jetstream).
	StoreDir string

	SubjectPrefix string
	Stream        string
	// DuplicateWindow of both streams. Zero: DefaultDuplicateWindow(URL),
	// as for an unset bus.duplicate_window.
	DuplicateWindow time.Duration
	MaxAge          time.Duration
	// Replicas of both streams (default 1).
	Replicas int
	// ExtraSubjects are added to the events stream beside <prefix>.>: the
	// fleet's fence subject lives there, so a publish can be conditional
	// on it (Nats-Expected-Last-Subject-Sequence-Subject).
	ExtraSubjects []string

	// MACKey signs every message the relay publishes (HdrMAC); Verify
	// checks it. Empty: a random key, good for this process only.
	MACKey []byte
	// CutoverFile records, at the first start that signs, the last
	// sequence of each stream: messages up to it pass Verify unsigned.
	// Empty: nothing unsigned passes.
	CutoverFile string

	// ReadyTimeout bounds the embedded server start and the first stream
	// creation. Default 10s.
	ReadyTimeout time.Duration
	// CheckInterval is how often the streams are checked to still exist
	// (on Clock). Default 10s; negative: never.
	CheckInterval time.Duration
	Logger        *slog.Logger
	// Clock paces the retries of stream creation. Default the wall clock.
	Clock clock.Clock
}

// Bus is a connection to JetStream with the relay's streams.
type Bus struct {
	opts Options
	log  *slog.Logger
	emb  *embedded // nil with an external NATS (embedded.go)
	nc   *nats.Conn
	js   jetstream.JetStream

	relayPW string // the in-process user's password (tests check TCP refuses it)
	signer  atomic.Pointer[signer]
	cutover atomic.Pointer[Cutover]

	inc       incidents
	watchDone chan struct{}

	streamsReady atomic.Bool
	streamErr    atomic.Pointer[string]
	stopEnsure   chan struct{}
	ensureDone   chan struct{}

	// The embedded server's storage (storage.go).
	storage     health.Tracker
	storageErr  atomic.Pointer[string]
	storageDone chan struct{}
	restarts    atomic.Uint64
	// listenLost: a restart could not take bus.embedded.listen again
	// (inProcessOnly); Ready says so.
	listenLost   atomic.Pointer[string]
	storageMu    sync.Mutex // checkStorage; it guards the fields below
	offSince     time.Time  // when JetStream was found off; zero while on
	nextRestart  time.Time  // no restart before, after a failed one
	restartSched backoff.Backoff
	closeOnce    sync.Once
	closeErr     error
}

// Open starts the embedded server or connects to the external one, and
// creates or updates the streams.
func Open(ctx context.Context, opts Options) (*Bus, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.ReadyTimeout <= 0 {
		opts.ReadyTimeout = 10 * time.Second
	}
	if opts.SubjectPrefix == "" {
		opts.SubjectPrefix = "cakework"
	}
	if opts.Stream == "" {
		opts.Stream = "CAKEWORK"
	}
	if opts.DuplicateWindow <= 0 {
		opts.DuplicateWindow = DefaultDuplicateWindow(opts.URL)
	}
	if opts.Clock == nil {
		opts.Clock = clock.Real{}
	}
	if len(opts.MACKey) == 0 {
		opts.MACKey = randomKey()
	}
	b := &Bus{opts: opts, log: opts.Logger.With("component", "bus"), stopEnsure: make(chan struct{}), ensureDone: make(chan struct{}),
		storageDone: make(chan struct{}), watchDone: make(chan struct{}), restartSched: newRestartSched()}
	b.signer.Store(newSigner(opts.MACKey))
	var err error
	if opts.URL == "" {
		err = b.startEmbedded(ctx)
	} else {
		err = b.connectExternal()
	}
	if err != nil {
		b.shutdown()
		return nil, err
	}
	js, err := jetstream.New(b.nc, jetstream.WithPublishAsyncTimeout(10*time.Second), jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		b.shutdown()
		return nil, fmt.Errorf("bus: jetstream: %w", err)
	}
	b.js = js
	ectx, cancel := context.WithTimeout(ctx, opts.ReadyTimeout)
	err = b.ensureStreams(ectx)
	cancel()
	if b.emb != nil && err == nil {
		go b.watchStorage()
	} else {
		close(b.storageDone)
	}
	switch {
	case err == nil:
		close(b.ensureDone)
	case opts.URL != "" && ctx.Err() == nil:
		// An external NATS that is down must not stop ingest: events wait in
		// the outbox. Keep trying in the background.
		b.setStreamErr(err)
		b.log.Warn("bus: streams not created yet; retrying in the background", "err", err)
		go b.ensureLoop()
	default:
		b.shutdown()
		return nil, err
	}
	if opts.CheckInterval == 0 {
		opts.CheckInterval = 10 * time.Second
	}
	if opts.CheckInterval > 0 {
		go b.watchStreams(opts.CheckInterval)
	} else {
		close(b.watchDone)
	}
	return b, nil
}

func (b *Bus) connectExternal() error {
	reconnect := backoff.Backoff{Initial: 250 * time.Millisecond, Max: 8 * time.Second, Jitter: -1}
	copts := []nats.Option{
		nats.Name("cakework-relay"),
		nats.MaxReconnects(-1),
		// CustomReconnectDelay replaces ReconnectWait and ReconnectJitter:
		// 250ms doubling to 8s, no jitter (nats.go waits on real time with
		// its own timer; a relay reconnects alone, nobody to spread from).
		nats.CustomReconnectDelay(func(attempts int) time.Duration {
			return reconnect.Delay(attempts + 1)
		}),
		nats.RetryOnFailedConnect(true),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			b.log.Warn("bus: disconnected from NATS; events wait in the outbox", "err", err)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			b.log.Info("bus: reconnected to NATS", "url", nc.ConnectedUrlRedacted())
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			b.log.Warn("bus: NATS error", "err", err)
		}),
	}
	if b.opts.CredsFile != "" {
		copts = append(copts, nats.UserCredentials(b.opts.CredsFile))
	}
	if b.opts.CAFile != "" {
		copts = append(copts, nats.RootCAs(b.opts.CAFile))
	}
	if b.opts.CertFile != "" || b.opts.KeyFile != "" {
		copts = append(copts, nats.ClientCert(b.opts.CertFile, b.opts.KeyFile))
	}
	if b.opts.CAFile != "" || b.opts.CertFile != "" {
		copts = append(copts, nats.Secure(&tls.Config{MinVersion: tls.VersionTLS12}))
	}
	nc, err := nats.Connect(b.opts.URL, copts...)
	if err != nil {
		return fmt.Errorf("bus: connect to %s: %w (check bus.url, bus.creds_file and bus.tls)", redactURL(b.opts.URL), redactErr(err, b.opts.URL))
	}
	b.nc = nc
	return nil
}

func (b *Bus) streamConfigs() []jetstream.StreamConfig {
	return []jetstream.StreamConfig{
		{
			Name:        b.opts.Stream,
			Description: "cakework-relay events",
			Subjects:    append([]string{b.opts.SubjectPrefix + ".>"}, b.opts.ExtraSubjects...),
			Storage:     jetstream.FileStorage,
			Retention:   jetstream.LimitsPolicy,
			Duplicates:  b.opts.DuplicateWindow,
			MaxAge:      b.opts.MaxAge,
			Replicas:    max(b.opts.Replicas, 1),
		},
		{
			Name:        b.DLQStream(),
			Description: "cakework-relay dead letters",
			Subjects:    []string{DLQSubjectPrefix + ".>"},
			Storage:     jetstream.FileStorage,
			Retention:   jetstream.LimitsPolicy,
			Duplicates:  b.opts.DuplicateWindow,
			MaxAge:      b.opts.MaxAge,
			Replicas:    max(b.opts.Replicas, 1),
		},
	}
}

func (b *Bus) ensureStreams(ctx context.Context) error {
	for _, cfg := range b.streamConfigs() {
		if _, err := b.js.CreateOrUpdateStream(ctx, cfg); err != nil {
			return fmt.Errorf("bus: create or update stream %s: %w", cfg.Name, err)
		}
	}
	if b.cutover.Load() == nil {
		if err := b.loadCutover(ctx); err != nil {
			return err
		}
	}
	b.streamsReady.Store(true)
	b.streamErr.Store(nil)
	return nil
}

func (b *Bus) setStreamErr(err error) {
	s := err.Error()
	b.streamErr.Store(&s)
}

// ensureLoop retries creating the streams, 1s doubling to 30s, on the
// injected clock.
func (b *Bus) ensureLoop() {
	defer close(b.ensureDone)
	sched := backoff.Backoff{Initial: time.Second, Max: 30 * time.Second, Jitter: -1}
	for {
		select {
		case <-b.stopEnsure:
			return
		case <-b.opts.Clock.After(sched.Next()):
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := b.ensureStreams(ctx)
		cancel()
		if err == nil {
			b.log.Info("bus: streams ready")
			return
		}
		b.setStreamErr(err)
	}
}

// Ready returns nil when the connection is up and the streams exist, or
// an error saying what is missing.
func (b *Bus) Ready() error {
	if b.nc == nil || b.nc.IsClosed() {
		return errors.New("bus: connection closed")
	}
	if b.emb != nil {
		if srv := b.server(); srv == nil || !srv.JetStreamEnabled() {
			msg := "it stopped storing (a write failed: is the disk holding " + b.opts.StoreDir + " full?); events wait in the outbox; free space there: every " +
				storageCheck.String() + " the relay writes a probe file, and once that succeeds it restarts its embedded NATS server, which starts JetStream again"
			if p := b.storageErr.Load(); p != nil {
				msg += " (" + *p + ")"
			}
			return fmt.Errorf("%w: %s", ErrStorageOff, msg)
		}
	}
	if st := b.nc.Status(); st != nats.CONNECTED {
		return fmt.Errorf("bus: not connected to NATS (%s)", st)
	}
	if p := b.listenLost.Load(); p != nil {
		return errors.New(*p)
	}
	if !b.streamsReady.Load() {
		if p := b.streamErr.Load(); p != nil {
			return errors.New(*p)
		}
		return errors.New("bus: streams not created yet")
	}
	return nil
}

// Conn is the core NATS connection (request-reply, plain subscriptions).
func (b *Bus) Conn() *nats.Conn { return b.nc }

// JetStream is the JetStream context.
func (b *Bus) JetStream() jetstream.JetStream { return b.js }

// SubjectPrefix is the events' subject prefix.
func (b *Bus) SubjectPrefix() string { return b.opts.SubjectPrefix }

// Stream is the event stream's name.
func (b *Bus) Stream() string { return b.opts.Stream }

// DLQStream is the dead-letter stream's name.
func (b *Bus) DLQStream() string { return b.opts.Stream + "_DLQ" }

// DLQSubject is the dead-letter subject of a sink.
func DLQSubject(sink string) string { return DLQSubjectPrefix + "." + sink }

// ClientURL is the address other processes use to reach the bus: the
// embedded server's listen address, or the external URL. Empty when the
// embedded server is in-process only.
func (b *Bus) ClientURL() string {
	if b.emb != nil {
		return b.emb.clientURL // the same address across restarts
	}
	return b.opts.URL
}

// Publish stores data on subject with Nats-Msg-Id msgID and waits for the
// acknowledgement. A duplicate inside the window is acknowledged with
// Duplicate set and not stored again.
func (b *Bus) Publish(ctx context.Context, subject, msgID string, data []byte, hdr nats.Header) (*jetstream.PubAck, error) {
	return b.js.PublishMsg(ctx, b.msg(subject, msgID, data, hdr))
}

// PublishAsync sends without waiting; the future resolves with the ack.
// Callers bound the number in flight (jetstream's default is 4000).
func (b *Bus) PublishAsync(subject, msgID string, data []byte, hdr nats.Header) (jetstream.PubAckFuture, error) {
	return b.js.PublishMsgAsync(b.msg(subject, msgID, data, hdr))
}

// PublishNoAck sends without a reply subject, with
// Nats-Expected-Last-Msg-Id expectLast (when not empty): JetStream stores
// the message only if the stream's last message has that id (and drops a
// duplicate), and answers nothing.
func (b *Bus) PublishNoAck(subject, msgID string, data []byte, expectLast string) error {
	var hdr nats.Header
	if expectLast != "" {
		hdr = nats.Header{jetstream.ExpectedLastMsgIDHeader: []string{expectLast}}
	}
	return b.nc.PublishMsg(b.msg(subject, msgID, data, hdr))
}

func (b *Bus) msg(subject, msgID string, data []byte, hdr nats.Header) *nats.Msg {
	m := nats.NewMsg(subject)
	m.Data = data
	if hdr != nil {
		m.Header = hdr
	}
	m.Header.Set(jetstream.MsgIDHeader, msgID)
	b.signer.Load().sign(m)
	return m
}

// Sign adds the relay's MAC (HdrMAC) to m, for a message the caller
// publishes itself (a fleet leader's fenced publishes). Set every Relay-*
// header first: the MAC covers them.
func (b *Bus) Sign(m *nats.Msg) {
	if m.Header == nil {
		m.Header = nats.Header{}
	}
	b.signer.Load().sign(m)
}

// SetMACKey replaces the install key: a fleet member takes the fleet's,
// read from the fleet's bucket once the bus is open, before it publishes
// anything.
func (b *Bus) SetMACKey(key []byte) { b.signer.Store(newSigner(key)) }

// ConsumerOptions describe a sink's durable consumer.
type ConsumerOptions struct {
	Durable        string
	FilterSubjects []string
	AckWait        time.Duration
	MaxAckPending  int
	// DeliverAll starts a new consumer at the beginning of the stream;
	// otherwise it starts with the next event.
	DeliverAll bool
	// AckedUpTo is the last stream sequence the sink is known to have
	// finished (kept by the caller). A consumer that is missing although
	// one was acked (it was deleted) is re-created from the next one,
	// and the incident shows on /readyz.
	AckedUpTo uint64
	// Existed says the caller had this consumer before: if it is missing
	// now, it was deleted, and is re-created from AckedUpTo+1.
	Existed bool
	Stream  string // default: the event stream
	// PinnedGroup, when set, makes the consumer a priority group of that
	// name with the pinned_client policy: the server delivers to one
	// client at a time, and pins another after PinnedTTL without a pull
	// request from it (a fleet's sinks).
	PinnedGroup string
	PinnedTTL   time.Duration
}

// EnsureConsumer creates or updates a durable pull consumer. An existing
// consumer keeps its position; only its filters and limits change.
func (b *Bus) EnsureConsumer(ctx context.Context, o ConsumerOptions) (jetstream.Consumer, error) {
	if o.AckWait <= 0 {
		o.AckWait = 30 * time.Second
	}
	if o.MaxAckPending <= 0 {
		o.MaxAckPending = 1000
	}
	stream := o.Stream
	if stream == "" {
		stream = b.opts.Stream
	}
	cfg := jetstream.ConsumerConfig{
		Durable:       o.Durable,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       o.AckWait,
		MaxAckPending: o.MaxAckPending,
		DeliverPolicy: jetstream.DeliverNewPolicy,
	}
	if o.DeliverAll {
		cfg.DeliverPolicy = jetstream.DeliverAllPolicy
	}
	if o.PinnedGroup != "" {
		cfg.PriorityPolicy = jetstream.PriorityPolicyPinned
		cfg.PriorityGroups = []string{o.PinnedGroup}
		cfg.PinnedTTL = o.PinnedTTL
	}
	if len(o.FilterSubjects) == 1 {
		cfg.FilterSubject = o.FilterSubjects[0]
	} else {
		cfg.FilterSubjects = o.FilterSubjects
	}
	c, err := b.js.Consumer(ctx, stream, o.Durable)
	switch {
	case err == nil:
		// Keep the original deliver policy: it cannot change once created.
		cfg.DeliverPolicy = c.CachedInfo().Config.DeliverPolicy
		cfg.OptStartSeq = c.CachedInfo().Config.OptStartSeq
		cfg.OptStartTime = c.CachedInfo().Config.OptStartTime
	case errors.Is(err, jetstream.ErrConsumerNotFound) && (o.Existed || o.AckedUpTo > 0):
		// It existed and was deleted: go on after what was acked, never
		// from "new" (the gap would never be delivered).
		from := o.AckedUpTo + 1
		if s, err := b.js.Stream(ctx, stream); err == nil && s.CachedInfo().State.LastSeq < o.AckedUpTo {
			from = 1 // the stream was re-created: its sequences began again
		}
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, from
		b.incident("consumer %s on %s was missing (deleted on the NATS server); re-created from stream sequence %d", o.Durable, stream, from)
	}
	c, err = b.js.CreateOrUpdateConsumer(ctx, stream, cfg)
	if err != nil {
		return nil, fmt.Errorf("bus: consumer %s on %s: %w", o.Durable, stream, err)
	}
	return c, nil
}

// Close drains the connection and stops the embedded server. Safe to call
// twice; bounded by ctx.
func (b *Bus) Close(ctx context.Context) error {
	b.closeOnce.Do(func() { b.closeErr = b.close(ctx) })
	return b.closeErr
}

func (b *Bus) close(ctx context.Context) error {
	// Each background loop stops at stopEnsure; a step under way (a
	// restart of the embedded server, a stream check) is awaited only
	// within ctx: a restart abandons itself (restartEmbedded) and starts
	// no server after the one taken below.
	close(b.stopEnsure)
	var errs []error
	for _, done := range []<-chan struct{}{b.ensureDone, b.storageDone, b.watchDone} {
		select {
		case <-done:
			continue
		default:
		}
		select {
		case <-done:
			continue
		case <-ctx.Done():
		}
		errs = append(errs, fmt.Errorf("bus: closed with a restart of the embedded server or a stream check still under way: %w", ctx.Err()))
		break
	}
	if b.nc != nil && !b.nc.IsClosed() {
		done := make(chan struct{})
		b.nc.SetClosedHandler(func(*nats.Conn) { close(done) })
		if err := b.nc.Drain(); err != nil {
			b.nc.Close()
		} else {
			select {
			case <-done:
			case <-ctx.Done():
				b.nc.Close()
				errs = append(errs, fmt.Errorf("bus: drain: %w", ctx.Err()))
			}
		}
	}
	if b.emb != nil {
		if srv := b.emb.close(); srv != nil {
			waitCtx(ctx, func() { srv.Shutdown(); srv.WaitForShutdown() })
		}
	}
	return errors.Join(errs...)
}

// shutdown undoes a partial Open.
func (b *Bus) shutdown() {
	if b.nc != nil {
		b.nc.Close()
	}
	if srv := b.server(); srv != nil {
		srv.Shutdown()
		srv.WaitForShutdown()
	}
}

func waitCtx(ctx context.Context, f func()) {
	done := make(chan struct{})
	go func() { f(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// StoreDir is where the embedded server keeps JetStream under data_dir.
func StoreDir(dataDir string) string { return filepath.Join(dataDir, "jetstream") }

// natsLogger sends the embedded server's log to slog. Fatalf must not exit
// the process: the relay reports the failure itself, and the first fatal
// message goes to fatal (when set) so a failed start is known at once.
type natsLogger struct {
	log   *slog.Logger
	fatal chan<- string // buffered
}

func (l *natsLogger) Noticef(f string, v ...any) { l.log.Debug("nats: " + fmt.Sprintf(f, v...)) }
func (l *natsLogger) Warnf(f string, v ...any)   { l.log.Warn("nats: " + fmt.Sprintf(f, v...)) }
func (l *natsLogger) Fatalf(f string, v ...any) {
	msg := fmt.Sprintf(f, v...)
	l.log.Error("nats: " + msg)
	select {
	case l.fatal <- msg:
	default:
	}
}
func (l *natsLogger) Errorf(f string, v ...any) { l.log.Error("nats: " + fmt.Sprintf(f, v...)) }
func (l *natsLogger) Debugf(f string, v ...any) {}
func (l *natsLogger) Tracef(f string, v ...any) {}

// redactErr hides the credentials of urls in err's text (nats.Connect
// quotes a URL it cannot parse whole). err is returned as is when it quotes
// none.
func redactErr(err error, urls string) error {
	msg := err.Error()
	clean := msg
	for _, p := range strings.Split(urls, ",") {
		p = strings.TrimSpace(p)
		at := strings.LastIndex(p, "@")
		if at < 0 {
			continue
		}
		clean = strings.ReplaceAll(clean, p, redactURL(p))
		userinfo := p[:at]
		if j := strings.Index(userinfo, "://"); j >= 0 {
			userinfo = userinfo[j+3:]
		}
		if userinfo != "" {
			clean = strings.ReplaceAll(clean, userinfo, "REDACTED")
		}
	}
	if clean == msg {
		return err
	}
	return errors.New(clean)
}

// redactURL hides the credentials of every server in a NATS URL list
// ("nats://u:p@a:4222,nats://u:p@b:4222"): user info (user:pass or a token)
// is replaced, never echoed.
func redactURL(u string) string {
	parts := strings.Split(u, ",")
	for i, p := range parts {
		at := strings.LastIndex(p, "@")
		if at < 0 {
			continue
		}
		start := 0
		if j := strings.Index(p, "://"); j >= 0 && j < at {
			start = j + 3
		}
		parts[i] = p[:start] + "REDACTED" + p[at:]
	}
	return strings.Join(parts, ",")
}
