package poller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/robfig/cron/v3"

	"github.com/cakework-relay/cakework-relay/internal/backoff"
	"github.com/cakework-relay/cakework-relay/internal/cakework"
	"github.com/cakework-relay/cakework-relay/internal/clock"
	"github.com/cakework-relay/cakework-relay/internal/event"
	"github.com/cakework-relay/cakework-relay/internal/health"
	"github.com/cakework-relay/cakework-relay/internal/state"
)

// Schedule names, as in config and in metrics labels.
const (
	ScheduleVMs    = "vms"
	ScheduleBuilds = "builds"
	ScheduleLogs   = "logs"
)

// Defaults for Options fields left zero.
const (
	DefaultWorkers           = 8
	DefaultMaxListPages      = 10000
	DefaultFunctionBuildIdle = 10 * time.Minute
	// tombstoneTTL is how long a destroyed VM that left the list is
	// remembered, so that a late reappearance in the list is not announced
	// as a new VM.
	tombstoneTTL = 24 * time.Hour
)

// ObservedBy is the observedBy value of every event the poller emits.
const ObservedBy = "poller"

// Options configure a Poller.
type Options struct {
	// Config is the poller section, validated, with its defaults
	// (Config.WithDefaults; config.Load does both). An empty schedule is
	// not run.
	Config Config
	// Cakework configures the API client. Clock and Logger are taken from
	// the fields below; HTTPClient's transport is wrapped to count calls.
	Cakework cakework.Options
	// SubjectPrefix is bus.subject_prefix ("cakework" when empty).
	SubjectPrefix string
	// IDs derives event ids (zero: the legacy unkeyed scheme).
	IDs event.IDs
	// Store keeps the poller's knowledge (StateStore: the relay's bbolt).
	Store Store
	// NATS, when set, serves relay.watch.build and relay.unwatch.build
	// request-reply.
	NATS *nats.Conn
	// Remote, when set (a fleet member), takes the admin API's watch
	// requests to the leader, which runs the poller.
	Remote     Remote
	Clock      clock.Clock
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// Backoff is the template for per-resource backoff after 5xx, timeouts
	// and garbled answers; its zero value is backoff.Backoff's defaults
	// (1s doubling to 5m, 50% jitter).
	Backoff backoff.Backoff
	// Workers bounds concurrent API calls per tick (log streams, builds,
	// getVM confirmations). The client's rate limit applies on top.
	Workers int
	// MaxListPages bounds one VM sweep; a longer list fails the sweep.
	MaxListPages int
	// FunctionBuildIdle: a watched function build is dropped once a logs
	// pass found nothing new and it has had no new line (or was added) this
	// long ago.
	FunctionBuildIdle time.Duration
}

// Poller runs the three schedules. Create it with New, register its HTTP
// parts with Register, then Start and Stop it.
type Poller struct {
	o       Options
	cfg     Config
	prefix  string
	client  *cakework.Client
	store   Store
	clk     clock.Clock
	log     *slog.Logger
	m       *metrics
	workers int

	sched map[string]*schedule
	cron  *cron.Cron

	mu       sync.Mutex
	stopping bool
	running  sync.WaitGroup
	runCtx   context.Context
	cancel   context.CancelFunc
	subs     []*nats.Subscription

	backoffMu sync.Mutex
	backoffs  map[string]*resourceBackoff

	warnMu    sync.Mutex
	warned    map[string]bool
	fullLogAt time.Time // last "watch list is full" line

	watched atomic.Int64 // build watches, as last counted
	refused atomic.Int64 // build watches refused at max_watched
	dropped atomic.Int64 // build watches dropped as unknown upstream

	authMu      sync.Mutex
	authFailAt  time.Time // last 401; zero after a success
	authLogAt   time.Time
	authMessage string

	know *knowledge

	notifyMu sync.Mutex
	notify   func() // OnVMKnowledge's callback
	// beforeLogCommit, when set (tests), runs before each log page's
	// transaction; an error aborts the stream as a crash would.
	beforeLogCommit func(kind, id string) error
}

type resourceBackoff struct {
	b    backoff.Backoff
	next time.Time
	// trouble: the failure was upstream trouble, not a 404 (a resource
	// unknown upstream backs off too, but does not fail its schedule).
	trouble bool
	// notFoundSince: the first of the 404s in a row (zero after anything
	// else).
	notFoundSince time.Time
}

// New checks options and builds the client. Nothing runs until Start.
func New(o Options) (*Poller, error) {
	if o.Store == nil {
		return nil, errors.New("poller: no state store")
	}
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.SubjectPrefix == "" {
		o.SubjectPrefix = "cakework"
	}
	if o.Workers <= 0 {
		o.Workers = DefaultWorkers
	}
	if o.MaxListPages <= 0 {
		o.MaxListPages = DefaultMaxListPages
	}
	if o.FunctionBuildIdle <= 0 {
		o.FunctionBuildIdle = DefaultFunctionBuildIdle
	}
	if o.Config.Logs.MaxPages <= 0 {
		o.Config.Logs.MaxPages = 10
	}
	if o.Config.Builds.MaxWatched <= 0 {
		o.Config.Builds.MaxWatched = DefaultMaxWatched
	}
	if o.Config.Builds.DropUnknownAfter <= 0 {
		o.Config.Builds.DropUnknownAfter = DefaultDropUnknownAfter
	}
	log := o.Logger.With("component", "poller")
	p := &Poller{
		o: o, cfg: o.Config, prefix: o.SubjectPrefix, store: o.Store, clk: o.Clock, log: log,
		workers:  o.Workers,
		backoffs: map[string]*resourceBackoff{},
		warned:   map[string]bool{},
		know:     newKnowledge(),
	}
	p.m = newMetrics(o.Registerer, p)

	co := o.Cakework
	co.Clock = o.Clock
	co.Logger = log
	hc := co.HTTPClient
	if hc == nil {
		hc = &http.Client{}
	}
	wrapped := *hc
	base := wrapped.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	wrapped.Transport = countingTransport{base: base, calls: p.m.apiCalls}
	co.HTTPClient = &wrapped
	c, err := cakework.New(co)
	if err != nil {
		return nil, fmt.Errorf("poller: %w", err)
	}
	p.client = c

	p.sched = map[string]*schedule{}
	for _, s := range []struct {
		name, spec string
		fn         func(context.Context) error
		keys       string // the prefix of its resources' backoff keys
	}{
		{ScheduleVMs, o.Config.VMs.Schedule, p.sweepVMs, "getVM/"},
		{ScheduleBuilds, o.Config.Builds.Schedule, p.pollBuilds, "getBuild/"},
		{ScheduleLogs, o.Config.Logs.Schedule, p.tailLogs, "logs/"},
	} {
		sc := &schedule{name: s.name, spec: s.spec, fn: s.fn, keys: s.keys}
		if s.spec != "" {
			cs, err := ParseSchedule(s.spec)
			if err != nil {
				return nil, fmt.Errorf("poller.%s.schedule %q: %w", s.name, s.spec, err)
			}
			sc.cron = cs
		}
		p.sched[s.name] = sc
	}
	return p, nil
}

// Client is the poller's Cakework client. Its rate limiter and 429 pause
// are shared by every caller, so in-process consumers (the auto-stopper)
// should call the API through it.
func (p *Poller) Client() *cakework.Client { return p.client }

// OnVMKnowledge registers f, called after every VM sweep and every logs
// pass, whether it succeeded or failed: what the poller knows of VMs may
// have changed. The auto-stopper re-evaluates idle clocks then. f runs on
// the tick's goroutine and must not block. It may be set while ticks run;
// a later call replaces f.
func (p *Poller) OnVMKnowledge(f func()) {
	p.notifyMu.Lock()
	p.notify = f
	p.notifyMu.Unlock()
}

func (p *Poller) notifyKnowledge() {
	p.notifyMu.Lock()
	f := p.notify
	p.notifyMu.Unlock()
	if f != nil {
		f()
	}
}

// Name implements the app component interface.
func (p *Poller) Name() string { return "poller" }

// Start writes the configured watches, loads what is known about VMs,
// subscribes to relay.watch.build and relay.unwatch.build and starts the cron scheduler (UTC,
// Recover, SkipIfStillRunning). Ticks run on their own context, cancelled
// by Stop.
//
// A Poller stopped with Stop can be started again (a fleet member does at
// each term it leads): it reloads its knowledge from the Store.
func (p *Poller) Start(ctx context.Context) error {
	p.mu.Lock()
	p.stopping = false
	p.mu.Unlock()
	now := p.clk.Now()
	if err := p.store.Update(ctx, func(tx Tx) error {
		for _, id := range p.cfg.WatchBuilds {
			if _, ok, err := tx.GetWatch(state.KindBuild, id); err != nil || ok {
				continue
			}
			if err := tx.PutWatch(state.KindBuild, id, state.Watch{Source: "config", AddedAt: now}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return fmt.Errorf("poller: write configured watches: %w", err)
	}
	if err := p.loadKnowledge(); err != nil {
		return fmt.Errorf("poller: load state: %w", err)
	}
	p.mu.Lock()
	p.runCtx, p.cancel = context.WithCancel(context.WithoutCancel(ctx))
	p.mu.Unlock()
	if p.o.NATS != nil {
		for subj, do := range map[string]func(context.Context, string) error{
			WatchBuildSubject:   p.natsWatch,
			UnwatchBuildSubject: p.natsUnwatch,
		} {
			sub, err := p.o.NATS.Subscribe(subj, natsBuildRequest(do))
			if err != nil {
				p.unsubscribe()
				return fmt.Errorf("poller: subscribe %s: %w", subj, err)
			}
			p.subs = append(p.subs, sub)
		}
	}
	cl := cronLogger{p.log}
	p.cron = cron.New(cron.WithLocation(time.UTC), cron.WithLogger(cl),
		cron.WithChain(cron.Recover(cl), cron.SkipIfStillRunning(cl)))
	for _, name := range []string{ScheduleVMs, ScheduleBuilds, ScheduleLogs} {
		s := p.sched[name]
		if s.cron == nil {
			continue
		}
		p.cron.Schedule(s.cron, cron.FuncJob(func() { p.scheduled(s) }))
	}
	p.cron.Start()
	p.log.Info("poller started",
		"vms", p.cfg.VMs.Schedule, "builds", p.cfg.Builds.Schedule, "logs", p.cfg.Logs.Schedule,
		"api", p.client.BaseURL())
	return nil
}

// unsubscribe ends the request-reply subscriptions.
func (p *Poller) unsubscribe() {
	for _, sub := range p.subs {
		_ = sub.Unsubscribe()
	}
	p.subs = nil
}

// Stop stops scheduling, waits up to poller.shutdown_timeout (and ctx) for
// a running tick to finish, then cancels it. Whatever a cancelled tick had
// committed stays consistent: each page or change commits with its events.
// Safe to call twice.
func (p *Poller) Stop(ctx context.Context) error {
	p.mu.Lock()
	if p.stopping {
		p.mu.Unlock()
		return nil
	}
	p.stopping = true
	cancel := p.cancel
	p.mu.Unlock()
	p.unsubscribe()
	if p.cron != nil {
		p.cron.Stop()
	}
	done := make(chan struct{})
	go func() { p.running.Wait(); close(done) }()
	timeout := p.cfg.ShutdownTimeout
	if timeout <= 0 {
		timeout = 3 * time.Second
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	var err error
	select {
	case <-done:
	case <-t.C:
		err = fmt.Errorf("poller: a tick was still running after %s; cancelled it", timeout)
	case <-ctx.Done():
		err = fmt.Errorf("poller: a tick was still running at shutdown; cancelled it: %w", ctx.Err())
	}
	if cancel != nil {
		cancel()
	}
	if err != nil {
		// Cancelling a tick is safe (each page and change commits with its
		// events), so a tick that ends once cancelled is a clean stop.
		p.log.Warn(err.Error())
		select {
		case <-done:
			err = nil
		case <-ctx.Done():
			err = fmt.Errorf("poller: a cancelled tick had not ended when shutdown's time ran out: %w", ctx.Err())
		}
	}
	return err
}

// TickVMs runs one VM sweep now. Cron calls it; tests call it directly.
func (p *Poller) TickVMs(ctx context.Context) error { return p.tick(ctx, p.sched[ScheduleVMs]) }

// TickBuilds polls every unfinished watched build once.
func (p *Poller) TickBuilds(ctx context.Context) error { return p.tick(ctx, p.sched[ScheduleBuilds]) }

// TickLogs reads new lines of every tailed stream, up to the page budget.
func (p *Poller) TickLogs(ctx context.Context) error { return p.tick(ctx, p.sched[ScheduleLogs]) }

// ErrTickRunning is returned by a Tick called while the same schedule's
// previous tick still runs: ticks never overlap.
var ErrTickRunning = errors.New("poller: previous tick still running")

// ErrStopped is returned by a Tick called after Stop.
var ErrStopped = errors.New("poller: stopped")

type schedule struct {
	name string
	spec string
	cron cron.Schedule
	fn   func(context.Context) error
	busy sync.Mutex
	// health makes a failing schedule loud once: WARN on the first
	// failure and on recovery, rate-limited between, and "degraded".
	health health.Tracker

	mu          sync.Mutex
	ticks       int64
	errors      int64
	lastSuccess time.Time
	lastError   time.Time
	lastErr     string
	lastTook    time.Duration
	hint        string // what to check, for the last failure
	keys        string // prefix of its resources' backoff keys
}

// scheduled is what cron runs: jitter, then the tick.
func (p *Poller) scheduled(s *schedule) {
	p.mu.Lock()
	ctx := p.runCtx
	p.mu.Unlock()
	if j := p.cfg.Jitter; j > 0 {
		if clock.Sleep(ctx, p.clk, rand.N(j)) != nil {
			return
		}
	}
	if err := p.tick(ctx, s); err != nil && !errors.Is(err, ErrStopped) && ctx.Err() == nil {
		p.log.Debug("tick failed", "schedule", s.name, "err", err)
	}
}

func (p *Poller) tick(ctx context.Context, s *schedule) error {
	p.mu.Lock()
	if p.stopping {
		p.mu.Unlock()
		return ErrStopped
	}
	p.running.Add(1)
	p.mu.Unlock()
	defer p.running.Done()
	if !s.busy.TryLock() {
		p.m.ticks.WithLabelValues(s.name, "skipped").Inc()
		return ErrTickRunning
	}
	defer s.busy.Unlock()
	// Stop cancels a running tick, whoever started it.
	p.mu.Lock()
	runCtx := p.runCtx
	p.mu.Unlock()
	if runCtx != nil {
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		defer cancel()
		defer context.AfterFunc(runCtx, cancel)()
	}
	if until := p.client.PausedUntil(); !until.IsZero() {
		// The upstream asked us to wait; no call goes out before it said.
		p.m.ticks.WithLabelValues(s.name, "paused").Inc()
		return nil
	}
	start := p.clk.Now()
	err := s.fn(ctx)
	took := p.clk.Now().Sub(start)
	p.pruneBackoffs()
	if s.name == ScheduleVMs || s.name == ScheduleLogs {
		p.notifyKnowledge()
	}
	s.mu.Lock()
	s.ticks++
	s.lastTook = took
	if err != nil {
		s.errors++
		s.lastError = p.clk.Now()
		s.lastErr = err.Error()
	} else {
		s.lastSuccess = p.clk.Now()
	}
	s.mu.Unlock()
	p.m.tickSeconds.WithLabelValues(s.name).Observe(took.Seconds())
	// A tick that only skipped a resource backing off after trouble has
	// not recovered: without this the schedule's health would flap with
	// every backoff.
	if ctx.Err() == nil && (err != nil || !p.troubled(s.keys)) {
		p.noteHealth(s, err)
	}
	if err != nil {
		p.m.ticks.WithLabelValues(s.name, "error").Inc()
		return err
	}
	p.m.ticks.WithLabelValues(s.name, "ok").Inc()
	p.m.lastSuccess.WithLabelValues(s.name).Set(float64(p.clk.Now().UnixNano()) / 1e9)
	return nil
}

// noteHealth logs a schedule's failing and recovered transitions at WARN,
// with the cause and what to check, and a reminder at most every
// health.DefaultRepeat while it keeps failing.
func (p *Poller) noteHealth(s *schedule, err error) {
	now := p.clk.Now()
	if err == nil {
		if c, st := s.health.OK(now); c == health.Recovered {
			p.log.Warn("poller schedule recovered", "schedule", s.name, "failures", st.Failures,
				"failing_for", now.Sub(st.Since).Round(time.Second))
		}
		return
	}
	h := cakework.Hint(err)
	s.mu.Lock()
	s.hint = h
	s.mu.Unlock()
	c, st := s.health.Fail(now, err)
	if c == health.Quiet {
		return
	}
	msg := "poller schedule failing; its events wait until it recovers"
	if c == health.StillFailing {
		msg = "poller schedule still failing"
	}
	attrs := []any{"schedule", s.name, "err", err}
	if h != "" {
		attrs = append(attrs, "fix", h)
	}
	if c == health.StillFailing {
		attrs = append(attrs, "failures", st.Failures, "since", st.Since.UTC().Format(time.RFC3339))
	}
	if st.Flaps > 0 {
		attrs = append(attrs, "flaps_since_last_report", st.Flaps)
	}
	p.log.Warn(msg, attrs...)
}

// Degraded is the "poller" degraded check: every schedule that is failing.
// A stopped poller (a fleet's standby) is not degraded: the leader polls.
func (p *Poller) Degraded() error {
	if p.stopped() {
		return nil
	}
	var errs []error
	for _, name := range []string{ScheduleVMs, ScheduleBuilds, ScheduleLogs} {
		s := p.sched[name]
		if s == nil {
			continue
		}
		if err := s.health.Degraded(); err != nil {
			msg := fmt.Sprintf("schedule %s %v", name, err)
			s.mu.Lock()
			if s.hint != "" {
				msg += " (" + s.hint + ")"
			}
			s.mu.Unlock()
			errs = append(errs, errors.New(msg))
		}
	}
	return errors.Join(errs...)
}

// paused reports whether a 429 pause is on; loops stop starting calls.
func (p *Poller) paused() bool { return !p.client.PausedUntil().IsZero() }

// due reports whether resource key may be called now (its backoff passed).
func (p *Poller) due(key string) bool {
	p.backoffMu.Lock()
	defer p.backoffMu.Unlock()
	rb := p.backoffs[key]
	return rb == nil || !p.clk.Now().Before(rb.next)
}

// failed records a failed call for key and schedules its next attempt.
// Only upstream trouble backs off; a cancelled context does not.
func (p *Poller) failed(key string, err error) {
	p.noteAuth(err)
	if errors.Is(err, context.Canceled) {
		return
	}
	p.backoffMu.Lock()
	defer p.backoffMu.Unlock()
	rb := p.backoffs[key]
	if rb == nil {
		rb = &resourceBackoff{b: p.o.Backoff}
		rb.b.Reset()
		p.backoffs[key] = rb
	}
	now := p.clk.Now()
	rb.next = now.Add(rb.b.NextAtLeast(cakework.RetryAfter(err)))
	rb.trouble = !cakework.IsNotFound(err)
	switch {
	case rb.trouble:
		rb.notFoundSince = time.Time{}
	case rb.notFoundSince.IsZero():
		rb.notFoundSince = now
	}
}

// notFoundFor is how long key has answered only 404 (0: it has not).
func (p *Poller) notFoundFor(key string) time.Duration {
	p.backoffMu.Lock()
	defer p.backoffMu.Unlock()
	if rb := p.backoffs[key]; rb != nil && !rb.notFoundSince.IsZero() {
		return p.clk.Now().Sub(rb.notFoundSince)
	}
	return 0
}

// staleBackoff: a backoff whose next call has been due this long belongs to
// a resource no tick calls any more (unwatched, retired, gone); it is
// pruned, so the map does not grow with resources that come and go.
const staleBackoff = time.Hour

// pruneBackoffs drops stale backoffs.
func (p *Poller) pruneBackoffs() {
	now := p.clk.Now()
	p.backoffMu.Lock()
	defer p.backoffMu.Unlock()
	for k, rb := range p.backoffs {
		if now.Sub(rb.next) >= staleBackoff {
			delete(p.backoffs, k)
		}
	}
}

// troubled reports whether a resource whose backoff key starts with prefix
// is backing off after upstream trouble. A tick that skipped it made no
// failing call, but has not recovered. Once its backoff has passed, the
// next tick calls it (and fails, or clears it); a resource that is gone
// (a retired stream, an unwatched build) then stops counting.
func (p *Poller) troubled(prefix string) bool {
	now := p.clk.Now()
	p.backoffMu.Lock()
	defer p.backoffMu.Unlock()
	for k, rb := range p.backoffs {
		if rb.trouble && now.Before(rb.next) && strings.HasPrefix(k, prefix) {
			return true
		}
	}
	return false
}

// succeeded clears key's backoff and any 401 condition.
func (p *Poller) succeeded(key string) {
	p.authOK()
	p.backoffMu.Lock()
	delete(p.backoffs, key)
	p.backoffMu.Unlock()
}

// noteAuth records a 401/403 for /readyz and logs it at most once a minute.
func (p *Poller) noteAuth(err error) {
	if !cakework.IsUnauthorized(err) {
		return
	}
	now := p.clk.Now()
	p.authMu.Lock()
	defer p.authMu.Unlock()
	p.authFailAt = now
	p.authMessage = err.Error()
	if p.authLogAt.IsZero() || now.Sub(p.authLogAt) >= time.Minute {
		p.authLogAt = now
		p.log.Error("Cakework rejected the API key; set cakework.api_key (CAKEWORK_API_KEY) to a valid key", "err", err)
	}
}

func (p *Poller) authOK() {
	p.authMu.Lock()
	p.authFailAt = time.Time{}
	p.authMu.Unlock()
}

// Ready is the "cakework" readiness check: it fails while the API key is
// rejected (until a call succeeds again).
func (p *Poller) Ready() error {
	if p.stopped() {
		return nil
	}
	p.authMu.Lock()
	defer p.authMu.Unlock()
	if !p.authFailAt.IsZero() {
		return fmt.Errorf("the Cakework API rejects the API key (401) since %s; check cakework.api_key", p.authFailAt.UTC().Format(time.RFC3339))
	}
	return nil
}

// stopped reports whether Stop was called and Start not since.
func (p *Poller) stopped() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stopping
}

// warnOnce logs msg once per key for the life of the process (bounded).
func (p *Poller) warnOnce(key, msg string, attrs ...any) {
	p.warnMu.Lock()
	if p.warned[key] {
		p.warnMu.Unlock()
		return
	}
	if len(p.warned) < 100000 {
		p.warned[key] = true
	}
	p.warnMu.Unlock()
	p.log.Warn(msg, attrs...)
}

// parallel runs fn for each item on at most n goroutines and joins errors.
func parallel[T any](ctx context.Context, n int, items []T, fn func(context.Context, T) error) error {
	if len(items) == 0 {
		return nil
	}
	n = min(n, len(items))
	ch := make(chan T)
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
	)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for it := range ch {
				if err := fn(ctx, it); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		}()
	}
feed:
	for _, it := range items {
		select {
		case ch <- it:
		case <-ctx.Done():
			break feed
		}
	}
	close(ch)
	wg.Wait()
	if len(errs) > 5 {
		errs = append(errs[:5], fmt.Errorf("and %d more errors", len(errs)-5))
	}
	if ctx.Err() != nil {
		errs = append(errs, ctx.Err())
	}
	return errors.Join(errs...)
}

// cronLogger adapts slog to cron.Logger.
type cronLogger struct{ l *slog.Logger }

func (c cronLogger) Info(msg string, kv ...any) { c.l.Debug("cron: "+msg, kv...) }
func (c cronLogger) Error(err error, msg string, kv ...any) {
	c.l.Error("cron: "+msg, append(kv, "err", err)...)
}
