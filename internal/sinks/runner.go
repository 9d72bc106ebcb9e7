package sinks

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/bus"
	"github.com/cakework-relay/cakework-relay/internal/clock"
	"github.com/cakework-relay/cakework-relay/internal/event"
	"github.com/cakework-relay/cakework-relay/internal/state"
)

// Options configure a Runner. Name, Bus and a Sender are required; the
// rest have defaults.
type Options struct {
	// Name names the sink: durable consumer sink_<Name>, dead letters on
	// relay.dlq.<Name>, metrics label sink=<Name>, status key.
	Name string
	// Kind is the sink type shown in status and logs: http, slack.
	Kind string
	// Endpoint names the target in logs and status, with no secret in it
	// (a callback URL without query or credentials, a Slack channel).
	Endpoint string
	// Events are short-type globs ("build.*", "vm.autostopped", "*").
	// Empty means every event.
	Events []string
	// Concurrency is how many resources are delivered in parallel (lanes).
	// Default 1.
	Concurrency int
	// Retry bounds retries. Zero fields default to 1s, 10m, 12 attempts.
	Retry RetryConfig

	Bus *bus.Bus
	// Store keeps the attempt count of a message being retried across
	// restarts. Optional.
	Store *state.Store
	// Records, when set, is where the attempt counts are kept instead of
	// Store (a fleet's shared bucket). Default: BoltRecords(Store).
	Records Records
	// Member, when set, makes this runner a fleet member's: its durable
	// consumer is shared by the fleet and pinned to one member at a time
	// (see doc.go), and the sink's active member is recorded under
	// Records.
	Member string
	// PinnedTTL is how long the server keeps the consumer pinned to a
	// member that sends no pull request (a dead or frozen one) before it
	// pins another. Default 10s.
	PinnedTTL time.Duration
	Clock     clock.Clock
	// Logger is the sink's own, scoped to it by the caller (the app adds
	// sink and kind; Manager.Add does when it supplies its logger).
	Logger  *slog.Logger
	Metrics *Metrics

	// AckWait is how long the server waits for an ack before redelivering;
	// held messages are kept alive at a third of it. Default 10s.
	AckWait time.Duration
	// MaxAckPending bounds the messages held at once (memory). Default
	// max(256, 8*Concurrency).
	MaxAckPending int
	// DeliverAll starts a new consumer at the beginning of the stream.
	// Default: a new sink gets the events published after its first start.
	DeliverAll bool
}

// DurableName is the durable consumer name of sink name.
func DurableName(name string) string { return "sink_" + name }

func (o *Options) defaults() error {
	if o.Name == "" {
		return errors.New("sinks: a sink needs a name")
	}
	if o.Bus == nil {
		return fmt.Errorf("sinks: sink %s: no bus", o.Name)
	}
	if o.Kind == "" {
		o.Kind = "sink"
	}
	if o.Concurrency < 1 {
		o.Concurrency = 1
	}
	o.Retry = RetryDefaults(o.Retry)
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Metrics == nil {
		o.Metrics = NewMetrics(nil)
	}
	if o.AckWait <= 0 {
		// Short, so a restart after a crash waits little for the dead
		// run's unacked messages; held ones are kept alive meanwhile.
		o.AckWait = 10 * time.Second
	}
	if o.MaxAckPending <= 0 {
		o.MaxAckPending = max(256, 8*o.Concurrency)
	}
	if o.Records == nil {
		o.Records = BoltRecords(o.Store)
	}
	if o.PinnedTTL <= 0 {
		o.PinnedTTL = 10 * time.Second
	}
	return nil
}

// Runner delivers one sink's events: see the package doc for what it
// guarantees. It composes the stages (consumer, lanes, delivery policy,
// dead letters) and owns their lifecycle and the sink's status. Build it
// with NewRunner, then Start and Stop.
type Runner struct {
	o      Options
	sender Sender
	log    *slog.Logger
	filter event.Filter

	stats   *tracker
	policy  *Policy
	dead    *deadLetters
	replays *replays
	cons    *consumer // set by Start
	lanes   *lanes    // set by Start
	// durable is cons (a *consumer) once Start set it, read by Status for
	// the lag without racing Start.
	durable atomic.Value

	stopCtx     context.Context // cancelled when Stop begins
	stopNow     context.CancelFunc
	sendCtx     context.Context // cancelled when Stop runs out of time
	cancelSends context.CancelFunc
	started     atomic.Bool
	stopOnce    sync.Once
	stopErr     error
}

// NewRunner checks o and builds a runner for sender. Nothing is opened or
// connected until Start.
func NewRunner(sender Sender, o Options) (*Runner, error) {
	if sender == nil {
		return nil, errors.New("sinks: nil sender")
	}
	if err := o.defaults(); err != nil {
		return nil, err
	}
	f, err := event.NewFilter(o.Events)
	if err != nil {
		return nil, fmt.Errorf("sinks: sink %s: events: %w", o.Name, err)
	}
	r := &Runner{
		o:       o,
		sender:  sender,
		log:     o.Logger,
		filter:  f,
		replays: &replays{running: map[uint64]bool{}},
	}
	r.stats = &tracker{
		name: o.Name, kind: o.Kind, endpoint: o.Endpoint, maxAttempts: o.Retry.MaxAttempts,
		clock: o.Clock, log: r.log, m: o.Metrics.forSink(o.Name),
	}
	r.policy, err = NewPolicy(sender, PolicyOptions{Name: o.Name, Retry: o.Retry, Clock: o.Clock, Recorder: r.stats})
	if err != nil {
		return nil, err
	}
	r.dead = &deadLetters{name: o.Name, bus: o.Bus, clock: o.Clock, log: r.log, stats: r.stats}
	r.stopCtx, r.stopNow = context.WithCancel(context.Background())
	r.sendCtx, r.cancelSends = context.WithCancel(context.Background())
	return r, nil
}

// Name is the sink's name.
func (r *Runner) Name() string { return r.o.Name }

// Kind is the sink's type.
func (r *Runner) Kind() string { return r.o.Kind }

// Start connects the sender (if it is a Connector), creates or updates the
// durable consumer and begins delivering.
func (r *Runner) Start(ctx context.Context) (err error) {
	if !r.started.CompareAndSwap(false, true) {
		return fmt.Errorf("sinks: sink %s started twice", r.o.Name)
	}
	defer func() {
		if err != nil {
			// Nothing runs yet: Stop only has to close the sender.
			r.started.Store(false)
		}
	}()
	if a, ok := r.sender.(Activated); ok {
		a.SetActive(r.Active)
	}
	if c, ok := r.sender.(Connector); ok {
		if err := c.Connect(ctx); err != nil {
			return fmt.Errorf("sink %s: connect: %w", r.o.Name, err)
		}
	}
	r.cons, err = openConsumer(ctx, &r.o, r.filter, r.log, r.stats.Unverified)
	if err != nil {
		return err
	}
	r.durable.Store(r.cons)
	r.lanes = startLanes(r.o.Concurrency, r.stopCtx.Done(), r.process, r.cons.handBack)
	r.cons.run(r.stopCtx.Done(), r.lanes.push)
	r.log.Info("sink started", "events", r.o.Events, "concurrency", r.o.Concurrency, "max_attempts", r.o.Retry.MaxAttempts)
	return nil
}

// Stop stops pulling, lets sends in flight finish until ctx ends (then
// cancels them), naks every other held message, and closes the sender if
// it is a Closer. Safe to call twice, and after a failed Start.
func (r *Runner) Stop(ctx context.Context) error {
	r.stopOnce.Do(func() { r.stopErr = r.stop(ctx) })
	return r.stopErr
}

func (r *Runner) stop(ctx context.Context) error {
	r.stopNow()
	r.replays.stop()
	if !r.started.Load() {
		r.cancelSends()
		return r.closeSender(ctx)
	}
	r.cons.drain()
	done := make(chan struct{})
	go func() {
		<-r.cons.done
		r.lanes.wait()
		r.replays.wait()
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		// Out of time: cancel the sends in flight. Their messages are
		// naked (or redelivered after AckWait), never lost.
		r.cancelSends()
		select {
		case <-done:
		case <-time.After(2 * time.Second):
		}
		err = fmt.Errorf("sink %s: stop: %w", r.o.Name, ctx.Err())
	}
	r.cancelSends()
	r.cons.close()
	return errors.Join(err, r.closeSender(ctx))
}

func (r *Runner) closeSender(ctx context.Context) error {
	c, ok := r.sender.(Closer)
	if !ok {
		return nil
	}
	if ctx.Err() != nil {
		// Stop ran out of time; the sender still gets a moment to end its
		// background work.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
	}
	return c.Close(ctx)
}

func (r *Runner) stopping() bool { return r.stopCtx.Err() != nil }

// process takes one held item through the delivery policy and acts on its
// verdict: ack, dead-letter, or hand back.
func (r *Runner) process(it *item) {
	defer r.cons.release(it)
	if it.decodeErr != nil {
		r.stats.noteError(it.decodeErr)
		a := &storedAttempts{store: r.o.Records, sink: r.o.Name, log: r.log, it: it}
		if !r.dead.store(r.stopCtx.Done(), it, a, fmt.Errorf("not a relay event, cannot be sent: %w", it.decodeErr), 0) {
			r.cons.handBack(it)
		}
		return
	}
	if r.cons.pin != nil && it.delivered > 0 && r.cons.pin.lost() {
		// Frozen and thawed: another member delivers the sink now and
		// gets this message back in order.
		r.cons.giveBack(it)
		return
	}
	a := &storedAttempts{store: r.o.Records, sink: r.o.Name, log: r.log, it: it}
	d := r.policy.Deliver(r.sendCtx, r.stopCtx.Done(), it.ev, a)
	switch d.Verdict {
	case Acked:
		_ = it.msg.Ack()
		a.clear()
	case DeadLettered:
		if !r.dead.store(r.stopCtx.Done(), it, a, d.Err, d.Attempts) {
			r.cons.handBack(it)
		}
	case Interrupted:
		r.cons.handBack(it)
	}
}

// Degraded is nil while the last send succeeded (or none failed), or why
// the sink is degraded.
func (r *Runner) Degraded() error { return r.stats.degraded() }

// Status reports counters, the last error and the disabled state.
func (r *Runner) Status() Status {
	s := r.stats.status()
	if r.started.Load() {
		s.InFlight = r.cons.inFlight()
	}
	if r.o.Member != "" {
		s.ActiveMember = r.activeMember()
	}
	if c, ok := r.durable.Load().(*consumer); ok && c.current() != nil {
		// One request to the server; bounded so a stuck bus cannot hang
		// GET /v1/status.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		if info, err := c.current().Info(ctx); err == nil {
			n := info.NumPending + uint64(info.NumAckPending)
			s.Pending = &n
		}
		cancel()
	}
	if at, reason, ok := r.policy.disabledSince(); ok {
		at = at.UTC()
		s.Disabled, s.DisabledAt, s.DisabledReason = true, &at, reason
	}
	return s
}
