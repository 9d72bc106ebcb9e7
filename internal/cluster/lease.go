package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cakework-relay/cakework-relay/internal/clock"
)

// Keys of the fleet bucket that the election uses.
const (
	leaseKey = "lease"
	// termKey fences the bucket: every write of the leader's knowledge is
	// conditional on its last sequence.
	termKey = "term"
)

// lease is the value of the lease key.
type lease struct {
	Member string `json:"member"` // "" when released
	Term   uint64 `json:"term"`
	// Renewal counts the holder's renewals (every renewal is a new
	// revision anyway; this makes it visible in `nats kv get`).
	Renewal uint64 `json:"renewal"`
}

// Term is one member's leadership: its number and the sequences of the two
// fences it wrote when it took over. A write conditional on a fence fails
// once a later leader wrote it again.
type Term struct {
	N uint64
	// KVFence is the bucket's last sequence of the term key.
	KVFence uint64
	// StreamFence is the events stream's last sequence of FenceSubject.
	StreamFence uint64
}

// ElectorOptions configure an Elector.
type ElectorOptions struct {
	JS       jetstream.JetStream
	KV       jetstream.KeyValue
	Stream   string // bus.stream: where FenceSubject lives
	Member   string
	LeaseTTL time.Duration
	Clock    clock.Clock
	Logger   *slog.Logger
	Metrics  *Metrics
	// Lead is called when this member becomes leader, in its own
	// goroutine; ctx ends when the term does, and Lead must then return
	// (the next term cannot begin before).
	Lead func(ctx context.Context, t Term)
}

// Elector takes, keeps and gives up the fleet's lease: a compare-and-set
// key in the fleet bucket, renewed every LeaseTTL/3. A standby that sees
// no new revision for LeaseTTL takes it with a compare-and-set on the
// revision it saw. The holder stops leading on its own once LeaseTTL minus
// a margin has passed since the last renewal it sent that succeeded, which
// is before any standby can take over (a standby counts from when it saw
// that renewal, which is later).
type Elector struct {
	o   ElectorOptions
	log *slog.Logger

	mu         sync.Mutex
	leading    bool
	term       Term
	validUntil time.Time
	leader     string // the holder last seen ("" unknown)

	// held by the run loop only
	rev        uint64    // revision of the lease as last seen or written
	seenAt     time.Time // when rev was first seen (standby)
	cur        lease
	cancelTerm context.CancelFunc
	termDone   chan struct{}

	resign     chan uint64 // asks the loop to give up a term
	warnedName bool
	lastHolder string // the last member seen holding the lease
}

// NewElector checks options.
func NewElector(o ElectorOptions) (*Elector, error) {
	if o.JS == nil || o.KV == nil || o.Member == "" || o.LeaseTTL <= 0 || o.Lead == nil {
		return nil, errors.New("cluster: elector needs JetStream, the bucket, a member name, a lease TTL and Lead")
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
	return &Elector{o: o, log: o.Logger.With("component", "cluster", "member", o.Member), resign: make(chan uint64, 1)}, nil
}

// margin is how much earlier than a standby could take over the holder
// stops believing it leads: room for clocks that run at slightly
// different rates and for the renewal's own round trip.
func (e *Elector) margin() time.Duration { return e.o.LeaseTTL / 5 }

// Leading reports whether this member leads in term t right now: the term
// is current and its lease has not run out on this member's clock. A
// frozen member that wakes up finds it false before it does anything.
func (e *Elector) Leading(t Term) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.leading && e.term.N == t.N && e.o.Clock.Now().Before(e.validUntil)
}

// Status is this member's view of the fleet.
type Status struct {
	Member string `json:"member"`
	Role   string `json:"role"` // leader | standby
	Leader string `json:"leader"`
	Term   uint64 `json:"term"`
}

// Status reports the role and the leader as last seen.
func (e *Elector) Status() Status {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := Status{Member: e.o.Member, Role: "standby", Leader: e.leader, Term: e.term.N}
	if e.leading && e.o.Clock.Now().Before(e.validUntil) {
		s.Role, s.Leader = "leader", e.o.Member
	}
	return s
}

// Resign gives up term t (a commit that could not be completed leaves the
// leader's knowledge uncertain; a new term reloads it). The lease is
// released, so this or another member takes over at once. A resignation
// of a term that already ended is ignored: a term that is being torn down
// fails its last commits, and those must not end the next one.
func (e *Elector) Resign(t Term) {
	e.mu.Lock()
	current := e.leading && e.term.N == t.N
	e.mu.Unlock()
	if !current {
		return
	}
	select {
	case e.resign <- t.N:
	default:
	}
}

// Run takes part in the election until ctx ends, then gives up the lease
// if it holds it, so a standby takes over without waiting for it to run
// out.
func (e *Elector) Run(ctx context.Context) {
	for {
		var wait time.Duration
		if e.isLeading() {
			wait = e.renew(ctx)
			// Wake at the latest when the lease runs out, to end the term
			// then (its context cancels what it still does), not at the
			// next renewal.
			if left := e.validUntilNow().Sub(e.o.Clock.Now()); e.isLeading() && left < wait {
				wait = max(left, 0)
			}
		} else {
			wait = e.campaign(ctx)
		}
		select {
		case <-ctx.Done():
			e.stepDown("shutting down", true)
			return
		case n := <-e.resign:
			if e.isLeading() && e.currentTerm() == n {
				e.stepDown("resigned: a commit could not be completed, so the next term reloads the knowledge", true)
			}
		case <-e.o.Clock.After(wait):
		}
	}
}

func (e *Elector) currentTerm() uint64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.term.N
}

func (e *Elector) isLeading() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.leading
}

func (e *Elector) rpcCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, max(e.o.LeaseTTL/3, 500*time.Millisecond))
}

// campaign reads the lease and takes it when it is free or has not been
// renewed for LeaseTTL. It returns how long to wait before looking again.
func (e *Elector) campaign(ctx context.Context) time.Duration {
	poll := e.o.LeaseTTL / 4
	now := e.o.Clock.Now()
	rctx, cancel := e.rpcCtx(ctx)
	defer cancel()
	entry, err := e.o.KV.Get(rctx, leaseKey)
	var cur lease
	var rev uint64
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		// Never held, or deleted: take it.
	case err != nil:
		e.log.Debug("cluster: cannot read the lease", "err", err)
		return poll
	default:
		rev = entry.Revision()
		if json.Unmarshal(entry.Value(), &cur) != nil {
			cur = lease{} // unreadable: treat as released
		}
		if rev != e.rev {
			e.rev, e.seenAt, e.cur = rev, now, cur
			e.setLeader(cur.Member)
			if cur.Member != "" {
				e.lastHolder = cur.Member
			}
		}
		// Released, or not renewed for a whole TTL. A lease in this
		// member's own name (from before a restart) waits like any other:
		// two processes configured with one name must not take turns.
		if cur.Member != "" && now.Sub(e.seenAt) < e.o.LeaseTTL {
			if cur.Member == e.o.Member && !e.warnedName {
				e.warnedName = true
				e.log.Info("cluster: the lease is held in this member's name by another process (a restart of this one, or two relays with one cluster.member); waiting for it to run out")
			}
			return poll
		}
	}
	next := lease{Member: e.o.Member, Term: cur.Term + 1}
	raw, _ := json.Marshal(next)
	sent := e.o.Clock.Now()
	var newRev uint64
	if rev == 0 {
		newRev, err = e.o.KV.Create(rctx, leaseKey, raw)
	} else {
		newRev, err = e.o.KV.Update(rctx, leaseKey, raw, rev)
	}
	if err != nil {
		// Another member was quicker, or NATS is away: look again.
		e.log.Debug("cluster: lease not taken", "err", err)
		return poll
	}
	e.rev, e.cur = newRev, next
	t, err := e.fence(ctx, next.Term)
	if err != nil {
		e.log.Warn("cluster: took the lease but could not fence the previous leader; giving it up", "term", next.Term, "err", err)
		e.release()
		return poll
	}
	e.mu.Lock()
	prev := e.lastHolder
	e.leading, e.term, e.validUntil, e.leader = true, t, sent.Add(e.o.LeaseTTL-e.margin()), e.o.Member
	e.mu.Unlock()
	// Drop a resignation meant for an earlier term.
	select {
	case <-e.resign:
	default:
	}
	if prev != "" && prev != e.o.Member {
		e.o.Metrics.Failovers.Inc()
	}
	e.lastHolder = e.o.Member
	e.o.Metrics.Leader.Set(1)
	e.log.Info("cluster: this member leads", "term", t.N, "previous", prev)
	tctx, tcancel := context.WithCancel(context.WithoutCancel(ctx))
	e.cancelTerm, e.termDone = tcancel, make(chan struct{})
	done := e.termDone
	go func() {
		defer close(done)
		e.o.Lead(tctx, t)
	}()
	return e.o.LeaseTTL / 3
}

// fence writes term n into the bucket's term key and onto the events
// stream's fence subject, each conditional on the last one seen, so
// nothing the previous leader still sends is accepted after this.
func (e *Elector) fence(ctx context.Context, n uint64) (Term, error) {
	rctx, cancel := e.rpcCtx(ctx)
	defer cancel()
	val := []byte(fmt.Sprintf("%d", n))
	var kvSeq uint64
	entry, err := e.o.KV.Get(rctx, termKey)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		kvSeq, err = e.o.KV.Create(rctx, termKey, val)
	case err != nil:
	default:
		kvSeq, err = e.o.KV.Update(rctx, termKey, val, entry.Revision())
	}
	if err != nil {
		return Term{}, fmt.Errorf("fence the bucket: %w", err)
	}
	st, err := e.o.JS.Stream(rctx, e.o.Stream)
	if err != nil {
		return Term{}, fmt.Errorf("fence the stream: %w", err)
	}
	subj := FenceSubject(e.o.Stream)
	var last uint64
	switch m, err := st.GetLastMsgForSubject(rctx, subj); {
	case errors.Is(err, jetstream.ErrMsgNotFound):
	case err != nil:
		return Term{}, fmt.Errorf("fence the stream: %w", err)
	default:
		last = m.Sequence
	}
	ack, err := e.o.JS.PublishMsg(rctx, &nats.Msg{Subject: subj, Data: val}, jetstream.WithExpectLastSequencePerSubject(last))
	if err != nil {
		return Term{}, fmt.Errorf("fence the stream: %w", err)
	}
	return Term{N: n, KVFence: kvSeq, StreamFence: ack.Sequence}, nil
}

// renew extends the lease with a compare-and-set on its revision. It
// returns how long to wait before the next renewal.
func (e *Elector) renew(ctx context.Context) time.Duration {
	every := e.o.LeaseTTL / 3
	if e.o.Clock.Now().After(e.validUntilNow()) {
		// Frozen, or NATS away for longer than the lease: a standby may
		// lead already. Stop before anything else happens.
		e.stepDown("the lease ran out before it could be renewed", false)
		return 0
	}
	next := e.cur
	next.Renewal++
	raw, _ := json.Marshal(next)
	rctx, cancel := e.rpcCtx(ctx)
	defer cancel()
	// A renewal still in flight when the lease runs out is given up: the
	// term must end on time.
	rctx, cancel2 := context.WithDeadline(rctx, e.validUntilNow())
	defer cancel2()
	sent := e.o.Clock.Now()
	rev, err := e.o.KV.Update(rctx, leaseKey, raw, e.rev)
	switch {
	case err == nil:
		e.rev, e.cur = rev, next
		e.mu.Lock()
		e.validUntil = sent.Add(e.o.LeaseTTL - e.margin())
		e.mu.Unlock()
	case errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists):
		e.o.Metrics.RenewErrors.Inc()
		e.stepDown("another member holds the lease", false)
		return 0
	default:
		e.o.Metrics.RenewErrors.Inc()
		e.log.Warn("cluster: lease renewal failed; still leading until it runs out", "err", err, "until", e.validUntilNow())
		if e.o.Clock.Now().After(e.validUntilNow()) {
			e.stepDown("the lease ran out before it could be renewed", false)
			return 0
		}
		return every / 2
	}
	return every
}

func (e *Elector) validUntilNow() time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.validUntil
}

// stepDown ends the term: Lead's context is cancelled, and Lead returns.
// With release, the lease is handed back so a standby need not wait.
func (e *Elector) stepDown(why string, release bool) {
	e.mu.Lock()
	was := e.leading
	e.leading = false
	e.mu.Unlock()
	if !was {
		return
	}
	e.o.Metrics.Leader.Set(0)
	e.log.Warn("cluster: this member no longer leads", "term", e.term.N, "why", why)
	if e.cancelTerm != nil {
		e.cancelTerm()
		<-e.termDone
	}
	if release {
		e.release()
	}
	// Count the lease as freshly seen: as a standby this member waits a
	// whole TTL before it tries again, unless it was released.
	e.seenAt = e.o.Clock.Now()
}

// release hands the lease back (member ""), if it is still ours.
func (e *Elector) release() {
	ctx, cancel := context.WithTimeout(context.Background(), max(e.o.LeaseTTL/3, 500*time.Millisecond))
	defer cancel()
	raw, _ := json.Marshal(lease{Term: e.cur.Term})
	if rev, err := e.o.KV.Update(ctx, leaseKey, raw, e.rev); err == nil {
		e.rev = rev
	}
	e.setLeader("")
}

func (e *Elector) setLeader(m string) {
	e.mu.Lock()
	e.leader = m
	e.mu.Unlock()
}

// Metrics are the relay_cluster_* series.
type Metrics struct {
	Leader      prometheus.Gauge
	Failovers   prometheus.Counter
	RenewErrors prometheus.Counter
}

// NewMetrics registers the series with reg (nil: unregistered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Leader: prometheus.NewGauge(prometheus.GaugeOpts{Name: "relay_cluster_leader",
			Help: "1 while this member leads the fleet (runs the poller and auto-stop), else 0."}),
		Failovers: prometheus.NewCounter(prometheus.CounterOpts{Name: "relay_cluster_failovers_total",
			Help: "Times this member took the lease from another member."}),
		RenewErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "relay_cluster_lease_renew_errors_total",
			Help: "Lease renewals that failed (NATS away, or another member took it)."}),
	}
	if reg != nil {
		reg.MustRegister(m.Leader, m.Failovers, m.RenewErrors)
	}
	return m
}
