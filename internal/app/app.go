// Package app wires the relay together: state, bus, outbox publisher, HTTP
// server, and the components (ingest, poller, sinks) built on them. Start
// undoes what it did when a step fails, and Stop tears down in reverse
// order, bounded by its context, safe to call twice.
package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/cakework-relay/cakework-relay/internal/bus"
	"github.com/cakework-relay/cakework-relay/internal/clock"
	"github.com/cakework-relay/cakework-relay/internal/cluster"
	"github.com/cakework-relay/cakework-relay/internal/config"
	"github.com/cakework-relay/cakework-relay/internal/event"
	"github.com/cakework-relay/cakework-relay/internal/httpapi"
	"github.com/cakework-relay/cakework-relay/internal/ingest"
	"github.com/cakework-relay/cakework-relay/internal/outbox"
	"github.com/cakework-relay/cakework-relay/internal/poller"
	"github.com/cakework-relay/cakework-relay/internal/sinks"
	"github.com/cakework-relay/cakework-relay/internal/state"
)

// Options configure an App.
type Options struct {
	Config  *config.Config
	Logger  *slog.Logger
	Clock   clock.Clock
	Version string
	// HTTPClient is used for upstream and sink calls; tests may inject one.
	HTTPClient *http.Client
	// CoreOnly runs the core alone (state, HTTP, bus, outbox publisher),
	// with no producer or consumer: for tests of the core.
	CoreOnly bool
}

// Component is a part of the relay with a lifecycle.
type Component interface {
	Name() string
	// Start begins work; long-running work goes in goroutines bound to ctx.
	Start(ctx context.Context) error
	// Stop finishes in-flight work, bounded by ctx.
	Stop(ctx context.Context) error
}

// Core is what the producers and the consumers are built on. Start opens
// it first and Stop closes it last; it is set between the two.
type Core struct {
	Config     *config.Config
	Logger     *slog.Logger
	Clock      clock.Clock
	Registry   *prometheus.Registry
	Store      *state.Store
	Bus        *bus.Bus
	HTTP       *httpapi.Server
	HTTPClient *http.Client
	Version    string
	// IDs derives event ids: keyed by the install key (legacy for an
	// install from before keyed ids).
	IDs event.IDs
	// Fleet is this relay's membership of a fleet (cluster.enabled): the
	// election, and the leader's poller and auto-stop. Shared is what
	// ingest and the sinks share with the other members. Both nil when it
	// runs alone.
	Fleet  *fleet
	Shared *FleetShared
}

// Producers put events on the bus (through the state store's outbox).
// Each is built on the core; auto-stop also on the poller, whose knowledge
// it reads.
type Producers struct {
	Ingest *ingest.Ingest
	// Poller is nil without a Cakework API key.
	Poller *poller.Poller
	// Autostop records activity signals always, and stops idle VMs when
	// sinks.autostop.enabled.
	Autostop *autostopRunner

	fleet *fleet // runs Poller and Autostop while this member leads
}

// Consumers deliver the bus's events: one runner per sink.
type Consumers struct {
	Sinks *sinks.Manager
}

// App is a running relay.
type App struct {
	o    Options
	log  *slog.Logger
	core *Core
	prod *Producers
	cons *Consumers

	store  *state.Store
	bus    *bus.Bus
	http   *httpapi.Server
	outbox *outbox.Publisher

	cancel     context.CancelFunc
	wg         sync.WaitGroup
	components []Component
	stopOnce   sync.Once
	stopErr    error
}

// New checks options. Nothing is opened until Start.
func New(o Options) (*App, error) {
	if o.Config == nil {
		return nil, errors.New("app: no config")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	}
	return &App{o: o, log: o.Logger}, nil
}

// Run starts the relay, waits for ctx to end, and stops it within
// shutdownTimeout.
func Run(ctx context.Context, o Options, shutdownTimeout time.Duration) error {
	a, err := New(o)
	if err != nil {
		return err
	}
	if err := a.Start(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	a.log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	return a.Stop(sctx)
}

// Start opens everything. On error, whatever was opened is closed again.
func (a *App) Start(ctx context.Context) (err error) {
	cfg := a.o.Config
	defer func() {
		if err != nil {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			a.stop(sctx)
		}
	}()
	if err := checkWritable(cfg.DataDir); err != nil {
		return err
	}
	// Before the state opens: whether it existed decides the event id
	// scheme of an install from before keyed ids.
	key, err := loadInstallKey(cfg)
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	a.store, err = state.Open(state.Options{Dir: cfg.DataDir, Logger: a.log})
	if err != nil {
		return err
	}
	a.http = httpapi.New(httpapi.Options{
		Listen:       cfg.HTTP.Listen,
		AdminListen:  cfg.HTTP.AdminListen,
		MaxBodyBytes: cfg.HTTP.MaxBodyBytes,
		AdminToken:   cfg.HTTP.AdminToken,
		ReadTimeout:  cfg.HTTP.ReadTimeout,
		WriteTimeout: cfg.HTTP.WriteTimeout,
		Gatherer:     reg,
		Logger:       a.log,
	})
	if err := a.http.Listen(); err != nil {
		return err
	}
	subToken, err := subscriberToken(cfg)
	if err != nil {
		return err
	}
	a.bus, err = bus.Open(ctx, bus.Options{
		URL:                  cfg.Bus.URL,
		CredsFile:            cfg.Bus.CredsFile,
		CAFile:               cfg.Bus.TLS.CAFile,
		CertFile:             cfg.Bus.TLS.CertFile,
		KeyFile:              cfg.Bus.TLS.KeyFile,
		EmbeddedListen:       cfg.Bus.Embedded.Listen,
		EmbeddedToken:        subToken,
		EmbeddedControlToken: cfg.Bus.Embedded.ControlToken,
		ReservedConsumers:    reservedConsumers(cfg),
		MACKey:               key.mac,
		CutoverFile:          cutoverFile(cfg),
		StoreDir:             bus.StoreDir(cfg.DataDir),
		SubjectPrefix:        cfg.Bus.SubjectPrefix,
		Stream:               cfg.Bus.Stream,
		DuplicateWindow:      cfg.Bus.Window(),
		MaxAge:               cfg.Bus.MaxAge,
		Replicas:             cfg.Bus.Replicas,
		ExtraSubjects:        fleetSubjects(cfg),
		Logger:               a.log,
		Clock:                a.o.Clock,
	})
	if err != nil {
		return err
	}
	if err := refuseNewStateBesideStream(ctx, cfg, a.store, a.bus); err != nil {
		return err
	}
	// A fleet member signs with the fleet's install key and derives its
	// event ids, read from the fleet's bucket before anything is published.
	var shared *FleetShared
	if cfg.Cluster.Enabled {
		if shared, err = openFleetShared(ctx, cfg, a.bus, key, a.log); err != nil {
			return err
		}
		key = shared.Key
		a.bus.SetMACKey(key.mac)
	}
	// Events the embedded server acknowledged leave the journal and the
	// outbox only once its files are synced (bus/sync.go).
	a.store.SetBusSync(a.bus.StreamSyncer())
	reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "relay_bus_syncs_total",
			Help: "fdatasyncs of the embedded JetStream's stream files before acknowledged events leave the journal or the outbox (0 with an external NATS).",
		}, func() float64 { return float64(a.store.Stats().BusSyncs) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "relay_bus_sync_errors_total",
			Help: "Failed syncs of the embedded JetStream's files; until one succeeds, acknowledged events stay in the journal and the outbox.",
		}, func() float64 { return float64(a.store.Stats().BusSyncErrors) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "relay_bus_embedded_restarts_total",
			Help: "In-process restarts of the embedded NATS server that started JetStream again after a full disk had turned it off (0 with an external NATS).",
		}, func() float64 { return float64(a.bus.EmbeddedRestarts()) }),
	)
	a.outbox = outbox.New(outbox.Options{Store: a.store, Bus: a.bus, Clock: a.o.Clock, Logger: a.log, Registerer: reg})
	a.http.AddReadyCheck("state", a.store.Ready)
	a.http.AddReadyCheck("bus", a.bus.Ready)
	a.http.AddDegradedCheck("bus_objects", a.bus.Incidents)
	a.http.AddReadyCheck("bus_sync", a.store.BusSyncError)
	a.http.AddReadyCheck("bus_store", a.outbox.StoreRefusing)
	a.http.AddStatus("outbox", func() any {
		st := map[string]any{"depth": a.store.OutboxDepth()}
		if err := a.outbox.LastError(); err != nil {
			st["lastError"] = err.Error()
		}
		return st
	})

	runCtx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	a.wg.Add(2)
	go func() { defer a.wg.Done(); a.outbox.Run(runCtx) }()
	go func() { defer a.wg.Done(); a.expireWebhookIDs(runCtx) }()

	a.core = &Core{
		Config: cfg, Logger: a.log, Clock: a.o.Clock, Registry: reg,
		Store: a.store, Bus: a.bus, HTTP: a.http, HTTPClient: a.o.HTTPClient, Version: a.o.Version,
		IDs:    key.ids,
		Shared: shared,
	}
	if cfg.Cluster.Enabled {
		a.core.Fleet = newFleet(a.core)
	}
	if !a.o.CoreOnly {
		if a.cons, err = buildConsumers(a.core); err != nil {
			return err
		}
		if a.prod, err = buildProducers(a.core); err != nil {
			// The sinks were built but not started: Stop still closes
			// their senders.
			a.components = append(a.components, a.cons.Sinks)
			return err
		}
		page, err := newStatusPage(a.core)
		if err != nil {
			a.components = append(a.components, a.cons.Sinks)
			return err
		}
		// Consumers first: a new sink's durable consumer exists before
		// anything is published. Stop runs in reverse (the status page,
		// last, stops first).
		for _, c := range append(append(a.cons.components(), a.prod.components()...), page) {
			if err := c.Start(runCtx); err != nil {
				return fmt.Errorf("start %s: %w", c.Name(), err)
			}
			a.components = append(a.components, c)
		}
	}
	a.http.Start()
	a.log.Info("relay started", "http", a.http.Addr(), "bus", busDesc(cfg, a.bus), "data_dir", cfg.DataDir)
	return nil
}

// Core is the opened core, after Start.
func (a *App) Core() *Core { return a.core }

// Producers are the running producers, after Start (nil with CoreOnly).
func (a *App) Producers() *Producers { return a.prod }

// HTTPAddr is the bound HTTP address.
func (a *App) HTTPAddr() string { return a.http.Addr() }

// Stop shuts down in reverse order: HTTP (finishing in-flight requests),
// components, the outbox (drained to the bus while there is time), the bus,
// then the state file. Safe to call twice.
func (a *App) Stop(ctx context.Context) error {
	a.stopOnce.Do(func() { a.stopErr = a.stop(ctx) })
	return a.stopErr
}

func (a *App) stop(ctx context.Context) error {
	var errs []error
	if a.http != nil {
		if err := a.http.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("http shutdown: %w", err))
		}
	}
	for i := len(a.components) - 1; i >= 0; i-- {
		if err := a.components[i].Stop(ctx); err != nil {
			errs = append(errs, fmt.Errorf("stop %s: %w", a.components[i].Name(), err))
		}
	}
	if a.cancel != nil {
		a.cancel()
		a.wg.Wait()
	}
	if a.outbox != nil && a.bus.Ready() == nil {
		if err := a.outbox.Drain(ctx); err != nil {
			// Not lost: the events stay in the outbox for the next start.
			a.log.Warn("outbox not fully drained; the rest is published on next start", "err", err)
		}
	}
	if a.bus != nil {
		if err := a.bus.Close(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if a.store != nil {
		if err := a.store.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close state: %w", err))
		}
	}
	return errors.Join(errs...)
}

// expireWebhookIDs keeps the seen-id index bounded: by seen_ttl, and by
// seen_max when ids arrive faster than they expire.
func (a *App) expireWebhookIDs(ctx context.Context) {
	var lastWarn time.Time
	for {
		for {
			n, err := a.store.ExpireWebhookIDs(ctx, a.o.Clock.Now(), 10000)
			if err != nil || n < 10000 {
				break
			}
		}
		trimmed := 0
		for {
			n, err := a.store.TrimWebhookIDs(ctx, a.o.Config.Ingest.SeenMax, 10000)
			trimmed += n
			if err != nil || n < 10000 {
				break
			}
		}
		if now := a.o.Clock.Now(); trimmed > 0 && now.Sub(lastWarn) >= time.Hour {
			lastWarn = now
			a.log.Warn("more webhook ids than ingest.seen_max: the oldest are forgotten before ingest.seen_ttl; raise seen_max (36 to 80 B of memory each) or lower seen_ttl",
				"forgotten", trimmed, "seen_max", a.o.Config.Ingest.SeenMax)
		}
		// Often, so a flood passes seen_max by seconds of ids, not a
		// minute's; with nothing to trim a pass reads no page.
		if clock.Sleep(ctx, a.o.Clock, seenTrimEvery) != nil {
			return
		}
	}
}

// seenTrimEvery is how often seen ids are expired and trimmed.
const seenTrimEvery = 5 * time.Second

func checkWritable(dir string) error {
	if dir == "" {
		return errors.New("data_dir is empty; set it to a writable directory")
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("data_dir %s: %w (set data_dir to a writable directory)", dir, err)
	}
	f, err := os.CreateTemp(dir, ".write-test-*")
	if err != nil {
		return fmt.Errorf("data_dir %s is not writable: %w", dir, err)
	}
	f.Close()
	return os.Remove(f.Name())
}

// refuseNewStateBesideStream stops a relay whose relay.db was just created
// (missing or empty) beside an embedded stream that holds messages: its
// record of what it published is gone, and it would publish again. With an
// external NATS the stream is not data_dir's (a new relay of a fleet joins
// one that has messages), so it is not checked.
func refuseNewStateBesideStream(ctx context.Context, cfg *config.Config, st *state.Store, b *bus.Bus) error {
	if !st.Created() || cfg.Bus.URL != "" {
		return nil
	}
	s, err := b.JetStream().Stream(ctx, b.Stream())
	if err != nil {
		return fmt.Errorf("read stream %s: %w", b.Stream(), err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return fmt.Errorf("read stream %s: %w", b.Stream(), err)
	}
	if n := info.State.Msgs; n > 0 {
		return state.StateLostError(filepath.Join(cfg.DataDir, state.FileName),
			fmt.Sprintf("the embedded stream %s in %s holds %d message(s)", b.Stream(), bus.StoreDir(cfg.DataDir), n))
	}
	return nil
}

func busDesc(cfg *config.Config, b *bus.Bus) string {
	if cfg.Bus.URL != "" {
		return "external"
	}
	if u := b.ClientURL(); u != "" {
		return "embedded " + u
	}
	return "embedded (in-process only)"
}

// NewLogger builds the relay's logger from the log config.
func NewLogger(c config.Log, w io.Writer) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(strings.ToUpper(c.Level))); err != nil && c.Level != "" {
		return nil, fmt.Errorf("log.level %q: use debug, info, warn or error", c.Level)
	}
	ho := &slog.HandlerOptions{Level: lvl}
	switch c.Format {
	case "json":
		return slog.New(slog.NewJSONHandler(w, ho)), nil
	case "", "text":
		return slog.New(slog.NewTextHandler(w, ho)), nil
	}
	return nil, fmt.Errorf("log.format %q: use text or json", c.Format)
}

// fleetSubjects are the events stream's subjects beyond <prefix>.>: the
// fleet's fence subject when cluster.enabled.
func fleetSubjects(cfg *config.Config) []string {
	if !cfg.Cluster.Enabled {
		return nil
	}
	return []string{cluster.FenceSubject(cfg.Bus.Stream)}
}

// cutoverFile records where signed messages begin for an install that
// predates signing. A fleet has none: fleets are as new as signing, so
// nothing unsigned on its streams is the relay's.
func cutoverFile(cfg *config.Config) string {
	if cfg.Cluster.Enabled {
		return ""
	}
	return bus.CutoverFile(cfg.DataDir)
}
