package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cakework-relay/cakework-relay/internal/autostop"
	"github.com/cakework-relay/cakework-relay/internal/backoff"
	"github.com/cakework-relay/cakework-relay/internal/cluster"
	"github.com/cakework-relay/cakework-relay/internal/ingest"
	"github.com/cakework-relay/cakework-relay/internal/poller"
	"github.com/cakework-relay/cakework-relay/internal/state"
)

// fleet makes this relay a member of a fleet (cluster.enabled): it takes
// part in the election, and while it leads it runs the poller and
// auto-stop on the fleet's shared knowledge (cluster.Store). Ingest and
// the sinks run on every member.
type fleet struct {
	core   *Core
	log    *slog.Logger
	member string
	store  *cluster.Store
	remote *cluster.Remote
	m      *cluster.Metrics

	// set by buildProducers
	poller   *poller.Poller
	autostop *autostopRunner
	signals  autostop.Signals // the leader's own, on the fleet store

	mu      sync.Mutex
	elector *cluster.Elector
	cancel  context.CancelFunc
	done    chan struct{}
}

func newFleet(c *Core) *fleet {
	cfg := c.Config
	f := &fleet{
		core:   c,
		log:    c.Logger.With("component", "cluster"),
		member: cfg.Cluster.MemberName(),
		remote: &cluster.Remote{NC: c.Bus.Conn(), Subject: cluster.ControlSubject(cfg.Bus.Stream)},
		m:      cluster.NewMetrics(c.Registry),
	}
	f.store = cluster.NewStore(cluster.StoreOptions{
		JS:            c.Bus.JetStream(),
		Stream:        cfg.Bus.Stream,
		SubjectPrefix: cfg.Bus.SubjectPrefix,
		Logger:        c.Logger,
		Clock:         c.Clock,
		Sign:          c.Bus.Sign,
		Leading:       f.leading,
		Resign:        f.resign,
		Announced:     func(ctx context.Context, id string) bool { return changeAnnounced(ctx, c, id) },
	})
	f.signals = autostop.Signals{Store: f.store.Autostop(), Clock: c.Clock}
	c.HTTP.AddStatus("cluster", func() any { return f.status() })
	return f
}

func (f *fleet) getElector() *cluster.Elector {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.elector
}

func (f *fleet) leading(t cluster.Term) bool {
	e := f.getElector()
	return e != nil && e.Leading(t)
}

func (f *fleet) resign(t cluster.Term) {
	if e := f.getElector(); e != nil {
		e.Resign(t)
	}
}

func (f *fleet) status() cluster.Status {
	if e := f.getElector(); e != nil {
		return e.Status()
	}
	return cluster.Status{Member: f.member, Role: "standby"}
}

func (f *fleet) Name() string { return "cluster" }

// Start joins the election in the background: the bucket is created (or
// waited for, while NATS is away), then this member campaigns.
func (f *fleet) Start(ctx context.Context) error {
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	f.cancel, f.done = cancel, make(chan struct{})
	go func() {
		defer close(f.done)
		kv := f.openBucket(rctx)
		if kv == nil {
			return
		}
		f.store.Attach(kv)
		e, err := cluster.NewElector(cluster.ElectorOptions{
			JS: f.core.Bus.JetStream(), KV: kv, Stream: f.core.Config.Bus.Stream,
			Member: f.member, LeaseTTL: f.core.Config.Cluster.LeaseTTL,
			Clock: f.core.Clock, Logger: f.core.Logger, Metrics: f.m,
			Lead: f.lead,
		})
		if err != nil {
			f.log.Error("cluster: cannot join the election", "err", err)
			return
		}
		f.mu.Lock()
		f.elector = e
		f.mu.Unlock()
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { defer wg.Done(); f.forwardQueuedWatches(rctx, kv) }()
		e.Run(rctx)
		wg.Wait()
	}()
	return nil
}

// openBucket creates the fleet bucket, retrying while NATS is away. nil
// once ctx ends.
func (f *fleet) openBucket(ctx context.Context) jetstream.KeyValue {
	sched := backoff.Backoff{Initial: 500 * time.Millisecond, Max: 10 * time.Second}
	for attempt := 1; ; attempt++ {
		octx, cancel := context.WithTimeout(ctx, 5*time.Second)
		kv, err := cluster.OpenBucket(octx, f.core.Bus.JetStream(), cluster.BucketOptions{
			Name:        cluster.Bucket(f.core.Config.Bus.Stream),
			Description: "cakework-relay fleet: the lease and the leader's knowledge",
			Replicas:    f.core.Config.Bus.Replicas,
		})
		cancel()
		if err == nil {
			return kv
		}
		if attempt == 1 || attempt%10 == 0 {
			f.log.Warn("cluster: cannot create the fleet bucket yet; this member is a standby until it can", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(sched.Next()):
		}
	}
}

// forwardQueuedWatches moves the builds ingest queued on this member to
// the fleet's queue, which the leader folds into the watch list.
func (f *fleet) forwardQueuedWatches(ctx context.Context, kv jetstream.KeyValue) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, err := f.core.Store.DrainWatchQueue(ctx, func(kind, id string, _ state.Watch) error {
			return cluster.QueueWatch(ctx, kv, kind, id)
		}); err != nil && ctx.Err() == nil {
			f.log.Debug("cluster: queued watches not forwarded yet", "err", err)
		}
	}
}

// lead runs one term: the knowledge is loaded, then the poller, auto-stop
// and the control subscription run until the term ends.
func (f *fleet) lead(ctx context.Context, t cluster.Term) {
	if err := f.store.Begin(ctx, t); err != nil {
		if ctx.Err() == nil {
			f.log.Warn("cluster: cannot load the fleet's knowledge; giving up the term", "term", t.N, "err", err)
			f.resign(t)
		}
		return
	}
	defer f.store.End()
	var started []Component
	if f.poller != nil {
		started = append(started, f.poller)
	}
	if f.autostop != nil {
		started = append(started, f.autostop)
	}
	var running []Component
	stop := func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for i := len(running) - 1; i >= 0; i-- {
			if err := running[i].Stop(sctx); err != nil {
				f.log.Warn("cluster: stop at the end of the term", "component", running[i].Name(), "err", err)
			}
		}
	}
	defer stop()
	for _, c := range started {
		if err := c.Start(ctx); err != nil {
			f.log.Warn("cluster: cannot start at the beginning of the term; giving it up", "component", c.Name(), "err", err)
			f.resign(t)
			return
		}
		running = append(running, c)
	}
	sub, err := cluster.ServeControl(f.core.Bus.Conn(), f.remote.Subject, leaderOps{f})
	if err != nil {
		f.log.Warn("cluster: cannot serve forwarded requests; giving up the term", "err", err)
		f.resign(t)
		return
	}
	defer func() { _ = sub.Unsubscribe() }()
	<-ctx.Done()
}

// Stop leaves the election, handing the lease back if this member holds
// it.
func (f *fleet) Stop(ctx context.Context) error {
	if f.cancel == nil {
		return nil
	}
	f.cancel()
	select {
	case <-f.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("cluster: leaving the election: %w", ctx.Err())
	}
}

// leaderOps answers forwarded admin requests at the leader.
type leaderOps struct{ f *fleet }

var errPollerOff = errors.New("the poller is off at the fleet's leader (no Cakework API key)")

func (l leaderOps) Watch(ctx context.Context, kind, id, source string) (bool, error) {
	if l.f.poller == nil {
		return false, errPollerOff
	}
	return l.f.poller.Watch(ctx, kind, id, source)
}

func (l leaderOps) Unwatch(ctx context.Context, kind, id string) (bool, error) {
	if l.f.poller == nil {
		return false, errPollerOff
	}
	return l.f.poller.Unwatch(ctx, kind, id)
}

func (l leaderOps) Watches() (poller.WatchList, error) {
	if l.f.poller == nil {
		return poller.WatchList{}, errPollerOff
	}
	return l.f.poller.Watches()
}

func (l leaderOps) Activity(ctx context.Context, id string) (time.Time, error) {
	return l.f.signals.Record(ctx, id)
}

// announcedReadTimeout bounds one read of the seen bucket by the leader's
// poller when the commit's context has no nearer deadline.
const announcedReadTimeout = 2 * time.Second

// changeAnnounced reports whether any member's ingest announced the change
// with this event id (the fleet's seen bucket). A failed read says no: the
// poller's event then carries the same id, and JetStream's window drops it.
// It runs under the fleet store's commit lock, so it reads under the
// commit's own context (a cancelled or deadline-bound commit stops
// waiting), and at most announcedReadTimeout in any case.
func changeAnnounced(ctx context.Context, c *Core, eventID string) bool {
	if c.Shared == nil {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, announcedReadTimeout)
	defer cancel()
	_, seen, err := (&cluster.Ingest{IDs: c.Shared.Seen}).Seen(ctx, ingest.FleetChangeKey(eventID))
	return err == nil && seen
}
