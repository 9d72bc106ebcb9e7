package sinks

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cakework-relay/cakework-relay/internal/bus"
	"github.com/cakework-relay/cakework-relay/internal/clock"
	"github.com/cakework-relay/cakework-relay/internal/config"
	"github.com/cakework-relay/cakework-relay/internal/event"
	"github.com/cakework-relay/cakework-relay/internal/health"
	"github.com/cakework-relay/cakework-relay/internal/state"
)

// Options configure a Runner. Name, Bus and a Sender are required; the
// rest have defaults.
type Options struct {
	// Name names the sink: durable consumer sink_<Name>, dead letters on
	// relay.dlq.<Name>, metrics label sink=<Name>, status key.
	Name string
	// Kind is the sink type shown in status and logs: http, slack, autostop.
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
	Retry config.Retry

	Bus *bus.Bus
	// Store keeps the attempt count of a message being retried across
	// restarts. Optional.
	Store   *state.Store
	Clock   clock.Clock
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
	if o.Retry.Initial <= 0 {
		o.Retry.Initial = time.Second
	}
	if o.Retry.MaxInterval <= 0 {
		o.Retry.MaxInterval = 10 * time.Minute
	}
	if o.Retry.MaxInterval < o.Retry.Initial {
		o.Retry.MaxInterval = o.Retry.Initial
	}
	if o.Retry.MaxAttempts < 1 {
		o.Retry.MaxAttempts = 12
	}
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
	return nil
}

// Runner delivers one sink's events: see the package doc for what it
// guarantees. Build it with NewRunner, then Start and Stop.
type Runner struct {
	o      Options
	sender Sender
	log    *slog.Logger
	filter event.Filter
	m      sinkMetrics

	iter         jetstream.MessagesContext
	lanes        []*lane
	stopCtx      context.Context // cancelled when Stop begins
	stopNow      context.CancelFunc
	sendCtx      context.Context // cancelled when Stop runs out of time
	cancelSends  context.CancelFunc
	dispatchDone chan struct{}
	lanesWG      sync.WaitGroup
	replayWG     sync.WaitGroup
	keepDone     chan struct{}
	started      atomic.Bool
	stopOnce     sync.Once
	stopErr      error

	heldMu sync.Mutex
	held   map[*item]struct{}

	gate *startGate // only the dispatcher touches it

	backMu      sync.Mutex
	back        []jetstream.Msg // handed back at Stop, in stream order
	backFlushed bool

	delivered, failed, retried, deadLettered atomic.Uint64

	// health makes a failing target loud once: WARN when sends start
	// failing and when one succeeds again, and "degraded" meanwhile.
	health health.Tracker

	mu        sync.Mutex
	lastErr   string
	lastErrAt time.Time
	disabled  *disabledState

	replayMu      sync.Mutex
	replaying     map[uint64]bool
	replayStopped bool // set by Stop; guards replayWG.Add
}

type disabledState struct {
	at     time.Time
	reason string
}

// NewRunner checks o and builds a runner for sender. Nothing is opened until
// Start.
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
		o:         o,
		sender:    sender,
		log:       o.Logger.With("sink", o.Name, "kind", o.Kind),
		filter:    f,
		m:         o.Metrics.forSink(o.Name),
		held:      map[*item]struct{}{},
		replaying: map[uint64]bool{},
	}
	r.stopCtx, r.stopNow = context.WithCancel(context.Background())
	r.sendCtx, r.cancelSends = context.WithCancel(context.Background())
	return r, nil
}

// Name is the sink's name.
func (r *Runner) Name() string { return r.o.Name }

// Kind is the sink's type.
func (r *Runner) Kind() string { return r.o.Kind }

// item is one message held by the runner, from receipt to ack or nak.
type item struct {
	msg       jetstream.Msg
	ev        event.Event
	decodeErr error
	seq       uint64 // stream sequence
	delivered uint64 // times the server delivered it
	saved     bool   // an attempt record exists in the store
}

type lane struct {
	mu     sync.Mutex
	q      []*item
	closed bool
	wake   chan struct{}
}

func (l *lane) push(it *item) bool {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return false
	}
	l.q = append(l.q, it)
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
	return true
}

func (l *lane) pop(stop <-chan struct{}) (*item, bool) {
	for {
		select {
		case <-stop:
			return nil, false
		default:
		}
		l.mu.Lock()
		if len(l.q) > 0 {
			it := l.q[0]
			l.q[0] = nil
			l.q = l.q[1:]
			l.mu.Unlock()
			return it, true
		}
		l.mu.Unlock()
		select {
		case <-l.wake:
		case <-stop:
			return nil, false
		}
	}
}

func (l *lane) close() []*item {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	rest := l.q
	l.q = nil
	return rest
}

// Start creates or updates the durable consumer and begins delivering.
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
	cons, err := r.o.Bus.EnsureConsumer(ctx, bus.ConsumerOptions{
		Durable:        DurableName(r.o.Name),
		FilterSubjects: r.filter.Subjects(r.o.Bus.SubjectPrefix()),
		AckWait:        r.o.AckWait,
		MaxAckPending:  r.o.MaxAckPending,
		DeliverAll:     r.o.DeliverAll,
	})
	if err != nil {
		return fmt.Errorf("sink %s: %w", r.o.Name, err)
	}
	if info := cons.CachedInfo(); info != nil && info.NumAckPending > 0 {
		// Messages left unacked by a previous run (a crash, or a stop that
		// could not hand them back) come back only after AckWait; hold newer
		// ones until they did, so a resource's events stay in order.
		r.gate = &startGate{
			last:     info.Delivered.Stream,
			pending:  info.NumAckPending,
			deadline: time.Now().Add(r.o.AckWait + 5*time.Second),
		}
		r.log.Info("sink: waiting for unacknowledged events of the previous run before newer ones",
			"pending", info.NumAckPending, "at_most", r.o.AckWait+5*time.Second)
	}
	iter, err := cons.Messages(jetstream.PullMaxMessages(min(r.o.MaxAckPending, 256)))
	if err != nil {
		return fmt.Errorf("sink %s: pull: %w", r.o.Name, err)
	}
	r.iter = iter
	r.lanes = make([]*lane, r.o.Concurrency)
	for i := range r.lanes {
		l := &lane{wake: make(chan struct{}, 1)}
		r.lanes[i] = l
		r.lanesWG.Add(1)
		go r.laneLoop(l)
	}
	r.dispatchDone = make(chan struct{})
	r.keepDone = make(chan struct{})
	go r.dispatch()
	go r.keepAlive()
	r.log.Info("sink started", "events", r.o.Events, "concurrency", r.o.Concurrency, "max_attempts", r.o.Retry.MaxAttempts)
	return nil
}

// Stop stops pulling, lets sends in flight finish until ctx ends (then
// cancels them), naks every other held message, and closes the sender if
// it has a Close method. Safe to call twice.
func (r *Runner) Stop(ctx context.Context) error {
	r.stopOnce.Do(func() { r.stopErr = r.stop(ctx) })
	return r.stopErr
}

func (r *Runner) stop(ctx context.Context) error {
	r.stopNow()
	// No replayWG.Add after this: the Wait below may begin at once.
	r.replayMu.Lock()
	r.replayStopped = true
	r.replayMu.Unlock()
	if !r.started.Load() {
		r.cancelSends()
		return r.closeSender()
	}
	r.iter.Drain()
	done := make(chan struct{})
	go func() {
		<-r.dispatchDone
		r.lanesWG.Wait()
		r.replayWG.Wait()
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
	r.flushHandBacks()
	close(r.keepDone)
	r.iter.Stop()
	return errors.Join(err, r.closeSender())
}

func (r *Runner) closeSender() error {
	if c, ok := r.sender.(interface{ Close() error }); ok {
		return c.Close()
	}
	return nil
}

func (r *Runner) stopping() bool { return r.stopCtx.Err() != nil }

// startGate holds back every message until the previous run's unacked
// messages were redelivered, then releases them all in stream order.
type startGate struct {
	last     uint64 // stream sequence last delivered before this run
	pending  int    // how many of those were unacked
	seen     int
	held     []*item
	deadline time.Time
}

func (r *Runner) openGate() {
	g := r.gate
	r.gate = nil
	// Redeliveries come back in the order their AckWait expired, not
	// necessarily stream order: sort before the lanes see them.
	sort.Slice(g.held, func(i, j int) bool { return g.held[i].seq < g.held[j].seq })
	for _, it := range g.held {
		if r.stopping() || !r.lanes[r.laneOf(it)].push(it) {
			r.release(it)
			r.handBack(it.msg)
		}
	}
}

func (r *Runner) dispatch() {
	defer close(r.dispatchDone)
	for {
		var msg jetstream.Msg
		var err error
		if r.gate != nil {
			if time.Now().After(r.gate.deadline) {
				r.log.Warn("sink: not all unacknowledged events of the previous run came back; going on", "missing", r.gate.pending-r.gate.seen)
				r.openGate()
				continue
			}
			msg, err = r.iter.Next(jetstream.NextMaxWait(time.Until(r.gate.deadline) + time.Millisecond))
		} else {
			msg, err = r.iter.Next()
		}
		if err != nil {
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				if r.gate != nil {
					r.openGate()
				}
				return
			}
			if r.gate != nil && time.Now().After(r.gate.deadline) {
				continue
			}
			r.log.Warn("sink: pulling messages", "err", err)
			select {
			case <-time.After(200 * time.Millisecond):
			case <-r.stopCtx.Done():
			}
			continue
		}
		if r.stopping() {
			// Drained after Stop: hand it back so it is redelivered first.
			r.handBack(msg)
			continue
		}
		it := &item{msg: msg}
		if md, err := msg.Metadata(); err == nil {
			it.seq, it.delivered = md.Sequence.Stream, md.NumDelivered
		}
		it.ev, it.decodeErr = event.Decode(msg.Data())
		if it.decodeErr == nil && !r.filter.Match(it.ev.ShortType()) {
			// The NATS filter is wider than the globs: not for this sink.
			_ = msg.Ack()
			continue
		}
		r.hold(it)
		if g := r.gate; g != nil {
			g.held = append(g.held, it)
			if it.seq <= g.last {
				g.seen++
			}
			if g.seen >= g.pending {
				r.openGate()
			}
			continue
		}
		if !r.lanes[r.laneOf(it)].push(it) {
			r.release(it)
			r.handBack(msg)
		}
	}
}

func (r *Runner) laneOf(it *item) int {
	if it.decodeErr != nil || len(r.lanes) == 1 {
		return 0
	}
	h := fnv.New32a()
	h.Write([]byte(it.ev.OrderKey()))
	return int(h.Sum32() % uint32(len(r.lanes)))
}

func (r *Runner) laneLoop(l *lane) {
	defer r.lanesWG.Done()
	for {
		it, ok := l.pop(r.stopCtx.Done())
		if !ok {
			break
		}
		r.process(it)
	}
	for _, it := range l.close() {
		r.release(it)
		r.handBack(it.msg)
	}
}

// handBack returns a message to the server for redelivery. While stopping,
// messages are collected and handed back together in stream order by Stop,
// so the server queues them for redelivery in that order.
func (r *Runner) handBack(m jetstream.Msg) {
	r.backMu.Lock()
	if r.backFlushed {
		r.backMu.Unlock()
		nakNow(m)
		return
	}
	r.back = append(r.back, m)
	r.backMu.Unlock()
}

// flushHandBacks naks the collected messages, oldest first.
func (r *Runner) flushHandBacks() {
	r.backMu.Lock()
	msgs := r.back
	r.back, r.backFlushed = nil, true
	r.backMu.Unlock()
	sort.Slice(msgs, func(i, j int) bool { return streamSeq(msgs[i]) < streamSeq(msgs[j]) })
	for _, m := range msgs {
		nakNow(m)
	}
}

// nakNow naks with a delay: unlike a plain nak, that is written to the
// consumer's stored state as already expired, so after a restart of the
// server too (the embedded one restarts with the relay) the message is
// redelivered at once rather than after AckWait.
func nakNow(m jetstream.Msg) { _ = m.NakWithDelay(time.Millisecond) }

func streamSeq(m jetstream.Msg) uint64 {
	if md, err := m.Metadata(); err == nil {
		return md.Sequence.Stream
	}
	return 0
}

func (r *Runner) hold(it *item) {
	r.heldMu.Lock()
	r.held[it] = struct{}{}
	r.heldMu.Unlock()
}

func (r *Runner) release(it *item) {
	r.heldMu.Lock()
	delete(r.held, it)
	r.heldMu.Unlock()
}

// keepAlive tells the server that held messages (queued behind a lane's
// head, or being retried) are still being worked on, so they are not
// redelivered out of order.
func (r *Runner) keepAlive() {
	t := time.NewTicker(max(r.o.AckWait/3, 50*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-r.keepDone:
			return
		case <-t.C:
		}
		r.heldMu.Lock()
		msgs := make([]jetstream.Msg, 0, len(r.held))
		for it := range r.held {
			msgs = append(msgs, it.msg)
		}
		r.heldMu.Unlock()
		for _, m := range msgs {
			_ = m.InProgress()
		}
	}
}

type deliveryOutcome int

const (
	outDelivered deliveryOutcome = iota
	outDeadLetter
	outInterrupted // stopping: leave the message for later
)

type delivery struct {
	outcome  deliveryOutcome
	err      error
	attempts int
}

// deliver is the send-and-retry pipeline shared by the lanes and replay.
// attempts is how many were made before; onRetry records a failed attempt
// that will be retried.
func (r *Runner) deliver(ev event.Event, attempts int, onRetry func(attempts int, err error)) delivery {
	for {
		if err := r.disabledErr(); err != nil {
			return delivery{outDeadLetter, err, attempts}
		}
		if r.stopping() {
			return delivery{outcome: outInterrupted, attempts: attempts}
		}
		attempts++
		start := time.Now()
		res := r.sender.Send(r.sendCtx, ev)
		r.m.duration.Observe(time.Since(start).Seconds())
		if res.Outcome == Done {
			r.delivered.Add(1)
			r.m.delivered.Inc()
			r.noteHealth(nil)
			return delivery{outcome: outDelivered, attempts: attempts}
		}
		if r.sendCtx.Err() != nil {
			// Cancelled by shutdown: that attempt doesn't count.
			return delivery{outcome: outInterrupted, attempts: attempts - 1}
		}
		err := orUnknown(res.Err)
		r.failed.Add(1)
		r.m.failed.Inc()
		r.noteError(err)
		r.noteHealth(err)
		if res.Outcome == GiveUp {
			if res.Disable {
				r.disable(err)
			}
			return delivery{outDeadLetter, err, attempts}
		}
		if attempts >= r.o.Retry.MaxAttempts {
			return delivery{outDeadLetter, fmt.Errorf("gave up after %d attempts: %w", attempts, err), attempts}
		}
		r.retried.Add(1)
		r.m.retried.Inc()
		if onRetry != nil {
			onRetry(attempts, err)
		}
		wait := retryWait(r.o.Retry, attempts, res.After)
		r.log.Debug("sink: send failed; retrying", "event", ev.ID, "attempt", attempts, "wait", wait, "err", err)
		if clock.Sleep(r.stopCtx, r.o.Clock, wait) != nil {
			return delivery{outcome: outInterrupted, attempts: attempts}
		}
	}
}

func (r *Runner) process(it *item) {
	defer r.release(it)
	if it.decodeErr != nil {
		r.noteError(it.decodeErr)
		r.deadLetterMsg(it, fmt.Errorf("not a relay event, cannot be sent: %w", it.decodeErr), 0)
		return
	}
	prev := r.loadAttempts(it)
	d := r.deliver(it.ev, prev, func(n int, err error) { r.saveAttempts(it, n, err) })
	switch d.outcome {
	case outDelivered:
		_ = it.msg.Ack()
		r.clearAttempts(it)
	case outDeadLetter:
		if r.deadLetterMsg(it, d.err, d.attempts) {
			r.clearAttempts(it)
		}
	case outInterrupted:
		r.handBack(it.msg)
	}
}

// attemptRecord is kept in the state store while a message is retried.
type attemptRecord struct {
	Attempts  int    `json:"attempts"`
	LastError string `json:"lastError"`
}

func attemptKey(seq uint64) string { return "attempts/" + strconv.FormatUint(seq, 10) }

func (r *Runner) loadAttempts(it *item) int {
	if r.o.Store == nil || it.delivered <= 1 || it.seq == 0 {
		return 0
	}
	var rec attemptRecord
	var ok bool
	err := r.o.Store.View(func(tx *state.Tx) (err error) {
		ok, err = tx.GetSink(r.o.Name, attemptKey(it.seq), &rec)
		return err
	})
	if err != nil {
		r.log.Warn("sink: reading attempt count; counting from 0", "err", err)
		return 0
	}
	if ok {
		it.saved = true
		return rec.Attempts
	}
	return 0
}

func (r *Runner) saveAttempts(it *item, n int, err error) {
	if r.o.Store == nil || it.seq == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rec := attemptRecord{Attempts: n, LastError: truncate(err.Error(), 512)}
	if e := r.o.Store.Update(ctx, func(tx *state.Tx) error { return tx.PutSink(r.o.Name, attemptKey(it.seq), rec) }); e != nil {
		r.log.Warn("sink: saving attempt count", "err", e)
		return
	}
	it.saved = true
}

func (r *Runner) clearAttempts(it *item) {
	if r.o.Store == nil || !it.saved {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if e := r.o.Store.Update(ctx, func(tx *state.Tx) error { return tx.DeleteSink(r.o.Name, attemptKey(it.seq)) }); e != nil {
		r.log.Warn("sink: clearing attempt count", "err", e)
	}
}

func (r *Runner) noteError(err error) {
	r.mu.Lock()
	r.lastErr = truncate(err.Error(), 1000)
	r.lastErrAt = r.o.Clock.Now()
	r.mu.Unlock()
}

// noteHealth logs the target's failing and recovered transitions at WARN,
// with the endpoint and the last answer, and a reminder at most every
// health.DefaultRepeat while it keeps failing.
func (r *Runner) noteHealth(err error) {
	now := r.o.Clock.Now()
	if err == nil {
		if c, st := r.health.OK(now); c == health.Recovered {
			r.log.Warn("sink recovered: a send succeeded", "endpoint", r.o.Endpoint, "failures", st.Failures,
				"failing_for", now.Sub(st.Since).Round(time.Second))
		}
		return
	}
	c, st := r.health.Fail(now, err)
	switch c {
	case health.Failing:
		r.log.Warn("sink failing: its events are retried with backoff, then dead-lettered; check the endpoint",
			"endpoint", r.o.Endpoint, "err", err, "max_attempts", r.o.Retry.MaxAttempts)
	case health.StillFailing:
		r.log.Warn("sink still failing", "endpoint", r.o.Endpoint, "err", err, "failures", st.Failures,
			"since", st.Since.UTC().Format(time.RFC3339))
	}
}

// Degraded is nil while the last send succeeded (or none failed), or why
// the sink is degraded.
func (r *Runner) Degraded() error {
	if err := r.health.Degraded(); err != nil {
		return fmt.Errorf("%s (%s) %w", r.o.Name, r.o.Endpoint, err)
	}
	return nil
}

func (r *Runner) disable(err error) {
	r.mu.Lock()
	already := r.disabled != nil
	if !already {
		r.disabled = &disabledState{at: r.o.Clock.Now(), reason: truncate(err.Error(), 1000)}
	}
	r.mu.Unlock()
	if already {
		return
	}
	r.m.disabled.Set(1)
	r.log.Error("SINK DISABLED: its target is gone; every event for this sink now goes to the dead-letter stream until the relay restarts. Fix the target, restart, then replay with 'relay dlq replay -all'",
		"err", err, "dlq_subject", bus.DLQSubject(r.o.Name))
}

// disabledErr is the error dead letters get while the sink is disabled.
func (r *Runner) disabledErr() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.disabled == nil {
		return nil
	}
	return fmt.Errorf("sink %s is disabled since %s (%s); restart the relay once the target is fixed",
		r.o.Name, r.disabled.at.UTC().Format(time.RFC3339), r.disabled.reason)
}

// Status is a sink's section of GET /v1/status. Counters are since start.
type Status struct {
	Kind         string     `json:"kind"`
	Endpoint     string     `json:"endpoint,omitempty"`
	Delivered    uint64     `json:"delivered"`
	Failed       uint64     `json:"failed"`
	Retried      uint64     `json:"retried"`
	DeadLettered uint64     `json:"deadLettered"`
	InFlight     int        `json:"inFlight"`
	LastError    string     `json:"lastError,omitempty"`
	LastErrorAt  *time.Time `json:"lastErrorAt,omitempty"`
	// Failing is set from a failed send until one succeeds.
	Failing        bool       `json:"failing"`
	FailingSince   *time.Time `json:"failingSince,omitempty"`
	Disabled       bool       `json:"disabled"`
	DisabledAt     *time.Time `json:"disabledAt,omitempty"`
	DisabledReason string     `json:"disabledReason,omitempty"`
}

// Status reports counters, the last error and the disabled state.
func (r *Runner) Status() Status {
	s := Status{
		Kind:         r.o.Kind,
		Endpoint:     r.o.Endpoint,
		Delivered:    r.delivered.Load(),
		Failed:       r.failed.Load(),
		Retried:      r.retried.Load(),
		DeadLettered: r.deadLettered.Load(),
	}
	if h := r.health.Current(); h.Failing {
		t := h.Since.UTC()
		s.Failing, s.FailingSince = true, &t
	}
	r.heldMu.Lock()
	s.InFlight = len(r.held)
	r.heldMu.Unlock()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.lastErr != "" {
		s.LastError = r.lastErr
		t := r.lastErrAt.UTC()
		s.LastErrorAt = &t
	}
	if r.disabled != nil {
		s.Disabled = true
		t := r.disabled.at.UTC()
		s.DisabledAt = &t
		s.DisabledReason = r.disabled.reason
	}
	return s
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
