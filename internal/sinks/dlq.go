package sinks

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cakework-relay/cakework-relay/internal/bus"
	"github.com/cakework-relay/cakework-relay/internal/clock"
	"github.com/cakework-relay/cakework-relay/internal/event"
)

// Dead-letter headers added by this package, next to the bus.HdrDLQ* ones.
const (
	HdrDLQType         = "Relay-Event-Type"
	HdrDLQEventSubject = "Relay-Event-Subject"
	HdrDLQStreamSeq    = "Relay-Stream-Seq" // sequence on the event stream
	HdrDLQReplayOf     = "Relay-Replay-Of"  // DLQ id this one was replayed from
)

// DeadLetter is one entry of the dead-letter stream, as GET /v1/dlq lists it.
type DeadLetter struct {
	// ID is the sequence on the <stream>_DLQ stream; replay takes it.
	ID      uint64 `json:"id"`
	Sink    string `json:"sink"`
	EventID string `json:"eventId"`
	Type    string `json:"type"`
	// Subject is the CloudEvent subject (the resource id).
	Subject     string `json:"subject"`
	NATSSubject string `json:"natsSubject,omitempty"`
	Error       string `json:"error"`
	Attempts    int    `json:"attempts"`
	// Time is when the event was dead-lettered.
	Time     time.Time `json:"time"`
	ReplayOf uint64    `json:"replayOf,omitempty"`
}

// Errors of Replay, mapped to HTTP statuses by the admin handler.
var (
	ErrDLQNotFound   = errors.New("no such dead letter")
	ErrReplayBusy    = errors.New("this dead letter is already being replayed")
	ErrSinkDisabled  = errors.New("the sink is disabled")
	ErrSinkUnknown   = errors.New("the sink is not configured in this relay")
	ErrNotReplayable = errors.New("the dead letter is not a relay event")
)

// ReplayResult says what a replay did.
type ReplayResult struct {
	ID uint64 `json:"id"`
	// Outcome: delivered (removed from the DLQ), dead-lettered (failed
	// again: removed, and stored again as NewID), in-progress (still
	// retrying; it stays in the DLQ until it ends) or interrupted (the
	// relay is stopping; it stays in the DLQ).
	Outcome  string `json:"outcome"`
	Sink     string `json:"sink"`
	EventID  string `json:"eventId,omitempty"`
	Attempts int    `json:"attempts,omitempty"`
	NewID    uint64 `json:"newId,omitempty"`
	Error    string `json:"error,omitempty"`
}

// Replay outcomes.
const (
	ReplayDelivered    = "delivered"
	ReplayDeadLettered = "dead-lettered"
	ReplayInProgress   = "in-progress"
	ReplayInterrupted  = "interrupted"
)

type deadLetterOut struct {
	ev          event.Event
	natsSubject string
	data        []byte
	err         error
	attempts    int
	streamSeq   uint64
	replayOf    uint64
}

// deadLetters is the dead-letter stage: it stores what the delivery
// policy gave up on, on the <stream>_DLQ stream under relay.dlq.<sink>,
// with headers saying why.
type deadLetters struct {
	name  string
	bus   *bus.Bus
	clock clock.Clock
	log   *slog.Logger
	stats *tracker
	// lookTimeouts counts looks (alreadyStored) in a row that timed out;
	// after dlqLookTries, lookOff: a NATS user that may not create
	// consumers on the DLQ stream, so every redelivery does not wait out
	// the timeout until the relay restarts.
	lookTimeouts atomic.Int32
	lookOff      atomic.Bool
	// lookTimeout, when set, replaces dlqLookTimeout (tests).
	lookTimeout time.Duration
	// looks counts the looks begun.
	looks atomic.Int64
}

// msgID is the dead letter's Nats-Msg-Id: stable for one failure of one
// message, so a publish repeated inside bus.duplicate_window (a redelivery
// after a crash before the ack, a publish retried after a lost ack) is
// dropped by JetStream; different for a replay that fails again, so the
// window never drops it. It is keyed by the install key (bus.KeyedID):
// whoever may publish on relay.dlq.> (an external NATS) and reads the
// event stream cannot store a message under it first and have the
// relay's dead letter dropped as a duplicate of theirs.
func (d *deadLetters) msgID(o deadLetterOut) string {
	if o.replayOf != 0 {
		return d.name + ":" + d.bus.KeyedID("relay.dlq", d.name, o.ev.ID, "r"+strconv.FormatUint(o.replayOf, 10))
	}
	return d.name + ":" + d.bus.KeyedID("relay.dlq", d.name, o.ev.ID, "s"+strconv.FormatUint(o.streamSeq, 10))
}

// freshMsgID is an id nobody used before, for a dead letter whose id was
// taken by a message the relay did not write.
func (d *deadLetters) freshMsgID(o deadLetterOut) string {
	var nonce [16]byte
	_, _ = rand.Read(nonce[:])
	return d.name + ":" + d.bus.KeyedID("relay.dlq", d.name, o.ev.ID, "n"+hex.EncodeToString(nonce[:]))
}

func (d *deadLetters) headers(o deadLetterOut) nats.Header {
	h := nats.Header{}
	h.Set(bus.HdrDLQSink, d.name)
	h.Set(bus.HdrDLQError, headerValue(o.err.Error()))
	h.Set(bus.HdrDLQAttempts, strconv.Itoa(o.attempts))
	h.Set(bus.HdrDLQEventID, headerValue(o.ev.ID))
	h.Set(bus.HdrDLQSubject, o.natsSubject)
	h.Set(bus.HdrDLQTime, d.clock.Now().UTC().Format(time.RFC3339Nano))
	h.Set(HdrDLQType, headerValue(o.ev.Type))
	h.Set(HdrDLQEventSubject, headerValue(o.ev.Subject))
	if o.streamSeq != 0 {
		h.Set(HdrDLQStreamSeq, strconv.FormatUint(o.streamSeq, 10))
	}
	if o.replayOf != 0 {
		h.Set(HdrDLQReplayOf, strconv.FormatUint(o.replayOf, 10))
	}
	return h
}

// publish stores o on the DLQ and returns its id. before, when set, is
// called with the msg id before each publish (store records its intent
// there).
//
// JetStream answers a publish whose id it stored inside the duplicate
// window as a duplicate, with the stored message's sequence. That is this
// dead letter when the relay stored it before; anything else (a message
// someone else stored under the id) does not stand for it: the dead letter
// is published again under a fresh id, once.
func (d *deadLetters) publish(ctx context.Context, o deadLetterOut, before func(msgID string)) (uint64, error) {
	subj := bus.DLQSubject(d.name)
	id := d.msgID(o)
	for fresh := false; ; fresh = true {
		if before != nil {
			before(id)
		}
		ack, err := d.bus.Publish(ctx, subj, id, o.data, d.headers(o))
		if err != nil {
			return 0, fmt.Errorf("publish to %s: %w", subj, err)
		}
		if !ack.Duplicate {
			return ack.Sequence, nil
		}
		ours, err := d.ours(ctx, ack.Sequence, id)
		if err != nil {
			return 0, fmt.Errorf("publish to %s: answered as a duplicate of message %d, which could not be checked: %w", subj, ack.Sequence, err)
		}
		if ours {
			return ack.Sequence, nil
		}
		if fresh {
			return 0, fmt.Errorf("publish to %s: answered again as a duplicate of a message the relay did not write (%d)", subj, ack.Sequence)
		}
		d.log.Warn("sink: a message the relay did not write holds the dead letter's id; storing it under a fresh id (someone else publishes on the DLQ subjects)",
			"event", o.ev.ID, "stream", d.bus.DLQStream(), "seq", ack.Sequence)
		id = d.freshMsgID(o)
	}
}

// ours says whether the DLQ message at seq is this sink's dead letter
// msgID, written by this relay (Relay-Mac verified). A message gone (by a
// replay, or deleted by whoever wrote it) is not.
func (d *deadLetters) ours(ctx context.Context, seq uint64, msgID string) (bool, error) {
	s, err := d.bus.JetStream().Stream(ctx, d.bus.DLQStream())
	if err != nil {
		return false, fmt.Errorf("dead-letter stream %s: %w", d.bus.DLQStream(), err)
	}
	m, err := s.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read dead letter %d: %w", seq, err)
	}
	return m.Subject == bus.DLQSubject(d.name) && m.Header.Get(jetstream.MsgIDHeader) == msgID &&
		d.bus.Verify(d.bus.DLQStream(), m.Sequence, m.Subject, m.Header, m.Data) == nil, nil
}

// Bounds of the look for a dead letter already stored (storedBefore).
const (
	// dlqPublishTimeout bounds one publish of a dead letter.
	dlqPublishTimeout = 10 * time.Second
	// dlqLookSkew widens the look's time range on both sides: the intent
	// time is the relay's clock, the DLQ's timestamps the NATS server's.
	// The range is [intent - skew, intent + dlqPublishTimeout + skew).
	dlqLookSkew = 2 * time.Second
	// dlqLookMax is how many of the sink's dead letters in that range it
	// reads at most (headers only), a safety net: normally it reads only
	// those stored while the dead letter was published.
	dlqLookMax = 10_000
	// dlqLookTimeout bounds the whole look.
	dlqLookTimeout = 5 * time.Second
	// dlqLookTries looks in a row that time out turn the look off.
	dlqLookTries = 3
)

// storedBefore looks on the DLQ stream for a dead letter with id msgID
// that this relay wrote (Relay-Mac verified), among the sink's dead
// letters stored around at, the time its publish began: first from at to
// at + dlqPublishTimeout + dlqLookSkew (where it is unless the relay's
// clock is ahead of the server's; only the dead letters stored while it
// was published are read before it), then, when not there, from
// at - dlqLookSkew to at. It reads at most dlqLookMax dead letters in
// all, headers only, through ephemeral consumers filtered on the sink's
// subject and started by time, which the relay's NATS user must be
// allowed to create on <stream>_DLQ; the one whose id matches is read
// whole to check its MAC. It returns the dead letter's id when found, 0
// when not, and ctx's error when ctx ended before it could tell.
func (d *deadLetters) storedBefore(ctx context.Context, msgID string, at time.Time) (uint64, error) {
	s, err := d.bus.JetStream().Stream(ctx, d.bus.DLQStream())
	if err != nil {
		return 0, fmt.Errorf("dead-letter stream %s: %w", d.bus.DLQStream(), err)
	}
	budget := dlqLookMax
	seq, err := d.scan(ctx, s, msgID, at, at.Add(dlqPublishTimeout+dlqLookSkew), &budget)
	if seq != 0 || err != nil || budget == 0 {
		return seq, err
	}
	return d.scan(ctx, s, msgID, at.Add(-dlqLookSkew), at, &budget)
}

// scan reads the sink's dead letters stored from from on and before to,
// at most *budget of them (it subtracts what it read), for msgID.
func (d *deadLetters) scan(ctx context.Context, s jetstream.Stream, msgID string, from, to time.Time, budget *int) (uint64, error) {
	c, err := s.CreateConsumer(ctx, jetstream.ConsumerConfig{
		FilterSubject:     bus.DLQSubject(d.name),
		DeliverPolicy:     jetstream.DeliverByStartTimePolicy,
		OptStartTime:      &from,
		AckPolicy:         jetstream.AckNonePolicy,
		HeadersOnly:       true,
		InactiveThreshold: time.Minute,
		MemoryStorage:     true,
	})
	if err != nil {
		return 0, fmt.Errorf("read %s on %s: %w", bus.DLQSubject(d.name), d.bus.DLQStream(), err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		_ = s.DeleteConsumer(dctx, c.CachedInfo().Name)
		cancel()
	}()
	left := int(min(c.CachedInfo().NumPending, uint64(*budget)))
	for left > 0 && ctx.Err() == nil {
		fctx, cancel := context.WithTimeout(ctx, time.Second)
		batch, err := c.Fetch(min(left, 1000), jetstream.FetchContext(fctx))
		if err != nil {
			cancel()
			if ctx.Err() != nil {
				break
			}
			return 0, fmt.Errorf("read %s on %s: %w", bus.DLQSubject(d.name), d.bus.DLQStream(), err)
		}
		got := 0
		var match []uint64
		for m := range batch.Messages() {
			got++
			if left == 0 {
				continue // drain what the batch holds
			}
			md, err := m.Metadata()
			if err != nil {
				continue
			}
			if !md.Timestamp.Before(to) {
				left = 0
				continue
			}
			left--
			*budget--
			if m.Headers().Get(jetstream.MsgIDHeader) == msgID {
				match = append(match, md.Sequence.Stream)
			}
			if md.NumPending == 0 {
				left = 0
			}
		}
		berr := batch.Error()
		cancel()
		for _, seq := range match {
			ok, err := d.ours(ctx, seq, msgID)
			if err != nil {
				return 0, err
			}
			if ok {
				return seq, nil
			}
		}
		if ctx.Err() != nil {
			break
		}
		if berr != nil && !errors.Is(berr, jetstream.ErrNoMessages) && !errors.Is(berr, nats.ErrTimeout) && !errors.Is(berr, context.DeadlineExceeded) {
			return 0, fmt.Errorf("read %s on %s: %w", bus.DLQSubject(d.name), d.bus.DLQStream(), berr)
		}
		if got == 0 {
			// Nothing more (dead letters deleted meanwhile, by a replay).
			break
		}
	}
	return 0, ctx.Err()
}

// alreadyStored reports whether a redelivered message (delivered before,
// by this relay or another fleet member) is on the DLQ already: the run
// that delivered it may have stored its dead letter and stopped before the
// ack. Within bus.duplicate_window JetStream would drop the repeat; after
// it (a relay down for longer) only this look does. It looks only when
// the message's record says a dead letter was being stored (no record:
// no look, so an ordinary redelivery costs nothing). A look that fails or
// times out answers false: the dead letter is stored again (at least
// once).
func (d *deadLetters) alreadyStored(stop <-chan struct{}, it *item, a *storedAttempts) bool {
	if it.delivered <= 1 || d.lookOff.Load() {
		return false
	}
	intent := a.record().DeadLetter
	if intent == nil {
		return false
	}
	d.looks.Add(1)
	timeout := dlqLookTimeout
	if d.lookTimeout > 0 {
		timeout = d.lookTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	go func() {
		select {
		case <-stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	seq, err := d.storedBefore(ctx, intent.MsgID, intent.At)
	if err != nil || seq == 0 {
		// Not found there: the publish about to be made records its own
		// time, so a later look finds at least that copy.
		a.forgetIntent()
	}
	if err != nil {
		off := false
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) {
			off = d.lookTimeouts.Add(1) >= dlqLookTries && !d.lookOff.Swap(true)
		}
		d.log.Warn("sink: cannot look for the dead letter of a redelivered event; storing it (it may be on the DLQ twice)",
			"event", it.ev.ID, "err", err)
		if off {
			d.log.Warn("sink: looks for dead letters keep timing out; not looking again until the relay restarts: allow the relay's NATS user to create consumers on the DLQ stream",
				"stream", d.bus.DLQStream(), "tries", dlqLookTries)
		}
		return false
	}
	d.lookTimeouts.Store(0)
	if seq == 0 {
		return false
	}
	d.log.Info("sink: redelivered event was dead-lettered before; not stored again", "event", it.ev.ID, "dlq_id", seq)
	return true
}

// store puts a held message on the DLQ, then acks it (ack: a's record
// is cleared once the server confirms the ack). While the bus refuses,
// it keeps trying every second (real time: it waits for the bus, not for a
// schedule); once stop is closed it gives up and reports false, and the
// caller hands the message back (it comes back after restart). A
// redelivered message whose dead letter is there already is only acked.
func (d *deadLetters) store(stop <-chan struct{}, it *item, a *storedAttempts, cause error, attempts int) bool {
	o := deadLetterOut{ev: it.ev, natsSubject: it.msg.Subject(), data: it.msg.Data(), err: cause, attempts: attempts, streamSeq: it.seq}
	if d.alreadyStored(stop, it, a) {
		d.stats.deadLetter()
		d.ack(it, a)
		return true
	}
	if it.delivered > 1 {
		select {
		case <-stop:
			// The look was cut short: hand it back, the next run looks
			// again.
			return false
		default:
		}
	}
	for {
		ctx, cancel := context.WithTimeout(context.Background(), dlqPublishTimeout)
		seq, err := d.put(ctx, a, o)
		cancel()
		if err == nil {
			// Counted before the ack: the dead letter is stored, and
			// whoever sees the ack sees the count.
			d.stats.deadLetter()
			d.ack(it, a)
			d.log.Warn("sink: event dead-lettered", "event", it.ev.ID, "type", it.ev.ShortType(), "subject", it.ev.Subject,
				"attempts", attempts, "dlq_id", seq, "err", cause)
			return true
		}
		d.log.Warn("sink: cannot store dead letter yet; keeping the event", "event", it.ev.ID, "err", err)
		select {
		case <-time.After(time.Second):
		case <-stop:
			return false
		}
	}
}

// ack acks a dead-lettered message and waits for the server to confirm
// it; only then is its record (attempts, and the intent a redelivery
// looks for) cleared. An ack lost on the way (a connection drop) brings
// the message back after AckWait, here or at another fleet member, and
// the kept intent makes that redelivery find its dead letter instead of
// storing it again. A record kept for an ack that did arrive is left
// behind (cleared by the next ack of that sequence, or the fleet
// bucket's TTL).
func (d *deadLetters) ack(it *item, a *storedAttempts) {
	ctx, cancel := context.WithTimeout(context.Background(), dlqAckTimeout)
	defer cancel()
	if err := it.msg.DoubleAck(ctx); err != nil {
		d.log.Warn("sink: the ack of a dead-lettered event was not confirmed; keeping its record, so a redelivery finds the dead letter",
			"event", it.ev.ID, "err", err)
		return
	}
	a.clear()
}

// dlqAckTimeout bounds the wait for the server's confirmation of a
// dead-lettered message's ack.
const dlqAckTimeout = 5 * time.Second

// put publishes o's dead letter, first writing into a's record, before
// each publish, that it is being stored (the time and msg id a redelivery
// looks for). If that write fails the dead letter is stored anyway: at
// least once.
func (d *deadLetters) put(ctx context.Context, a *storedAttempts, o deadLetterOut) (uint64, error) {
	return d.publish(ctx, o, func(msgID string) {
		// Wall clock, not d.clock: it is compared with the server's
		// timestamps.
		if err := a.storing(msgID, time.Now()); err != nil {
			d.log.Warn("sink: cannot record that the dead letter is being stored; storing it anyway (should the relay stop before the ack, it may be stored twice)",
				"event", o.ev.ID, "err", err)
		}
	})
}

// headerValue keeps a header value on one line and bounded.
func headerValue(s string) string {
	s = strings.NewReplacer("\r\n", "; ", "\n", "; ", "\r", " ", "\x00", "").Replace(s)
	return truncate(s, 2000)
}

func deadLetterFrom(m *jetstream.RawStreamMsg) DeadLetter {
	h := m.Header
	d := DeadLetter{
		ID:          m.Sequence,
		Sink:        h.Get(bus.HdrDLQSink),
		EventID:     h.Get(bus.HdrDLQEventID),
		Type:        h.Get(HdrDLQType),
		Subject:     h.Get(HdrDLQEventSubject),
		NATSSubject: h.Get(bus.HdrDLQSubject),
		Error:       h.Get(bus.HdrDLQError),
		Time:        m.Time.UTC(),
	}
	d.Attempts, _ = strconv.Atoi(h.Get(bus.HdrDLQAttempts))
	if t, err := time.Parse(time.RFC3339Nano, h.Get(bus.HdrDLQTime)); err == nil {
		d.Time = t.UTC()
	}
	d.ReplayOf, _ = strconv.ParseUint(h.Get(HdrDLQReplayOf), 10, 64)
	if d.Sink == "" {
		d.Sink = strings.TrimPrefix(m.Subject, bus.DLQSubjectPrefix+".")
	}
	return d
}

// ListDLQ returns up to limit dead letters, oldest first, of one sink (or
// all when sink is ""), and whether more were left out.
func ListDLQ(ctx context.Context, b *bus.Bus, sink string, limit int) ([]DeadLetter, bool, error) {
	stream, err := b.JetStream().Stream(ctx, b.DLQStream())
	if err != nil {
		return nil, false, fmt.Errorf("dead-letter stream %s: %w", b.DLQStream(), err)
	}
	subj := bus.DLQSubjectPrefix + ".>"
	if sink != "" {
		subj = bus.DLQSubject(sink)
	}
	out := []DeadLetter{}
	for seq := uint64(1); ; {
		m, err := stream.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subj))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return out, false, nil
		}
		if err != nil {
			return out, false, fmt.Errorf("read dead letter after %d: %w", seq, err)
		}
		seq = m.Sequence + 1
		if b.Verify(b.DLQStream(), m.Sequence, m.Subject, m.Header, m.Data) != nil {
			// Not written by this relay: not a dead letter of ours.
			continue
		}
		if len(out) == limit {
			return out, true, nil
		}
		out = append(out, deadLetterFrom(m))
	}
}

// getDLQ loads one dead letter by id.
func getDLQ(ctx context.Context, b *bus.Bus, id uint64) (jetstream.Stream, *jetstream.RawStreamMsg, error) {
	stream, err := b.JetStream().Stream(ctx, b.DLQStream())
	if err != nil {
		return nil, nil, fmt.Errorf("dead-letter stream %s: %w", b.DLQStream(), err)
	}
	m, err := stream.GetMsg(ctx, id)
	if errors.Is(err, jetstream.ErrMsgNotFound) || (err == nil && !strings.HasPrefix(m.Subject, bus.DLQSubjectPrefix+".")) {
		return nil, nil, fmt.Errorf("dead letter %d: %w", id, ErrDLQNotFound)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("dead letter %d: %w", id, err)
	}
	if err := b.Verify(b.DLQStream(), m.Sequence, m.Subject, m.Header, m.Data); err != nil {
		return nil, nil, fmt.Errorf("dead letter %d: %w", id, ErrDLQNotFound)
	}
	return stream, m, nil
}

// replays tracks the replays in flight, so one dead letter is not replayed
// twice at once and Stop can wait for them.
type replays struct {
	mu      sync.Mutex
	running map[uint64]bool
	stopped bool // set by Stop; guards wg.Add
	wg      sync.WaitGroup
}

// begin registers a replay of dead letter id; false with the reason when
// it may not start.
func (rs *replays) begin(name string, id uint64) error {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.stopped {
		// Stop may be waiting on wg: adding now would be a misuse.
		return fmt.Errorf("sink %s is not running", name)
	}
	if rs.running[id] {
		return ErrReplayBusy
	}
	rs.running[id] = true
	rs.wg.Add(1)
	return nil
}

func (rs *replays) end(id uint64) {
	rs.mu.Lock()
	delete(rs.running, id)
	rs.mu.Unlock()
	rs.wg.Done()
}

// stop refuses new replays; wait may begin at once.
func (rs *replays) stop() {
	rs.mu.Lock()
	rs.stopped = true
	rs.mu.Unlock()
}

func (rs *replays) wait() { rs.wg.Wait() }

// replay re-sends one dead letter through this runner's delivery policy,
// outside the lanes, with a fresh attempt budget. It waits for the end
// until ctx ends; the replay itself goes on without the caller (bounded by
// the runner's life) and its outcome is logged.
func (r *Runner) replay(ctx context.Context, stream jetstream.Stream, m *jetstream.RawStreamMsg) (ReplayResult, error) {
	res := ReplayResult{ID: m.Sequence, Sink: r.o.Name}
	if !r.started.Load() || r.stopping() {
		return res, fmt.Errorf("sink %s is not running", r.o.Name)
	}
	if err := r.policy.Disabled(); err != nil {
		return res, fmt.Errorf("%w: %v", ErrSinkDisabled, err)
	}
	ev, err := event.Decode(m.Data)
	if err != nil {
		return res, fmt.Errorf("%w: %v", ErrNotReplayable, err)
	}
	res.EventID = ev.ID
	if err := r.replays.begin(r.o.Name, m.Sequence); err != nil {
		return res, err
	}

	done := make(chan ReplayResult, 1)
	go func() {
		defer r.replays.end(m.Sequence)
		out := res
		d := r.policy.Deliver(r.sendCtx, r.stopCtx.Done(), ev, FreshAttempts{})
		out.Attempts = d.Attempts
		bctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		switch d.Verdict {
		case Acked:
			out.Outcome = ReplayDelivered
			if err := stream.DeleteMsg(bctx, m.Sequence); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
				out.Error = fmt.Sprintf("delivered, but removing it from the DLQ failed (a later replay would send it again): %v", err)
			}
			r.log.Info("sink: dead letter replayed", "dlq_id", m.Sequence, "event", ev.ID, "attempts", d.Attempts)
		case DeadLettered:
			out.Outcome = ReplayDeadLettered
			out.Error = d.Err.Error()
			newID, err := r.dead.publish(bctx, deadLetterOut{ev: ev, natsSubject: m.Header.Get(bus.HdrDLQSubject), data: m.Data, err: d.Err, attempts: d.Attempts, replayOf: m.Sequence}, nil)
			if err != nil {
				// The old entry stays: nothing is lost.
				out.Error += "; storing it again failed, so it stays as dead letter " + strconv.FormatUint(m.Sequence, 10) + ": " + err.Error()
				break
			}
			out.NewID = newID
			r.stats.deadLetter()
			if err := stream.DeleteMsg(bctx, m.Sequence); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
				r.log.Warn("sink: replayed dead letter stored again but the old entry was not removed", "dlq_id", m.Sequence, "err", err)
			}
			r.log.Warn("sink: replayed dead letter failed again", "dlq_id", m.Sequence, "new_dlq_id", newID, "event", ev.ID, "err", d.Err)
		default:
			out.Outcome = ReplayInterrupted
			out.Error = "the relay is stopping; the dead letter stays"
		}
		done <- out
	}()
	select {
	case out := <-done:
		return out, nil
	case <-ctx.Done():
		res.Outcome = ReplayInProgress
		return res, nil
	}
}
