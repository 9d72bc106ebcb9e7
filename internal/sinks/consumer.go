package sinks

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cakework-relay/cakework-relay/internal/bus"
	"github.com/cakework-relay/cakework-relay/internal/event"
)

// item is one message held by the runner, from receipt to ack or nak.
type item struct {
	msg       jetstream.Msg
	ev        event.Event
	decodeErr error
	seq       uint64 // stream sequence
	delivered uint64 // times the server delivered it
}

// consumer is the JetStream stage: the durable consumer and its pull
// iterator, the start gate that holds newer messages back until the
// previous run's unacked ones came back, the keep-alive of held messages,
// and the ordered hand-back (nak) of the ones not finished at Stop.
//
// Its timers are real time, not the injected clock: AckWait and
// redelivery run on the server's clock.
type consumer struct {
	log     *slog.Logger
	filter  event.Filter
	ackWait time.Duration
	// verify says whether the relay published a message; dropped is
	// told of each it did not (they are terminated, never delivered).
	verify  func(jetstream.Msg, uint64) error
	dropped func(subject string, seq uint64)

	// iter is replaced when the consumer was deleted under the relay
	// (reopen); mu guards it against drain and close.
	mu       sync.Mutex
	iter     jetstream.MessagesContext
	draining bool
	reopen   func() (jetstream.MessagesContext, error)
	floor    *ackFloor
	gate     *startGate // only the dispatch loop touches it
	// durable is the consumer as last opened (for its lag in the status).
	durable jetstream.Consumer

	// pin follows which member the fleet's consumer is pinned to (nil
	// for a single relay).
	pin *pinWatch

	held     heldSet
	back     handBacks
	keepDone chan struct{}
	done     chan struct{} // closed when the dispatch loop ends
}

// openConsumer creates or updates the durable consumer of sink o.Name and
// starts pulling (but dispatches nothing until run).
func openConsumer(ctx context.Context, o *Options, filter event.Filter, log *slog.Logger, dropped func(string, uint64)) (*consumer, error) {
	floor := &ackFloor{store: o.Store, sink: o.Name, log: log}
	existed := floor.load()
	ensure := func(ctx context.Context) (jetstream.Consumer, error) {
		cons, err := o.Bus.EnsureConsumer(ctx, bus.ConsumerOptions{
			Durable:        DurableName(o.Name),
			FilterSubjects: filter.Subjects(o.Bus.SubjectPrefix()),
			AckWait:        o.AckWait,
			MaxAckPending:  o.MaxAckPending,
			DeliverAll:     o.DeliverAll,
			AckedUpTo:      floor.get(),
			Existed:        existed,
			PinnedGroup:    pinnedGroupOf(o),
			PinnedTTL:      o.PinnedTTL,
		})
		if err != nil {
			return nil, fmt.Errorf("sink %s: %w", o.Name, err)
		}
		existed = true
		floor.setConsumer(cons)
		floor.observe(cons.CachedInfo().AckFloor.Stream)
		return cons, nil
	}
	cons, err := ensure(ctx)
	if err != nil {
		return nil, err
	}
	stream := o.Bus.Stream()
	c := &consumer{log: log, filter: filter, ackWait: o.AckWait, held: heldSet{m: map[*item]struct{}{}},
		verify: func(m jetstream.Msg, seq uint64) error {
			return o.Bus.Verify(stream, seq, m.Subject(), m.Headers(), m.Data())
		},
		dropped: dropped,
		durable: cons,
	}
	pullOpts := []jetstream.PullMessagesOpt{jetstream.PullMaxMessages(min(o.MaxAckPending, 256))}
	if o.Member != "" {
		// A fleet member: the previous run's unacked messages may be
		// another member's in flight; the gate closes at each new pin
		// instead (pin.go).
		c.pin = &pinWatch{cons: cons, ackWait: o.AckWait, onPin: o.onPin}
		pullOpts = append(pullOpts, jetstream.PullPriorityGroup(PinnedGroup), jetstream.PullExpiry(pullExpiry(o.PinnedTTL)))
	} else if info := cons.CachedInfo(); info != nil && info.NumAckPending > 0 {
		// Messages left unacked by a previous run (a crash, or a stop that
		// could not hand them back) come back only after AckWait; hold newer
		// ones until they did, so a resource's events stay in order.
		c.gate = &startGate{
			last:     info.Delivered.Stream,
			pending:  info.NumAckPending,
			deadline: time.Now().Add(o.AckWait + 5*time.Second),
		}
		log.Info("sink: waiting for unacknowledged events of the previous run before newer ones",
			"pending", info.NumAckPending, "at_most", o.AckWait+5*time.Second)
	}
	pull := func(cons jetstream.Consumer) (jetstream.MessagesContext, error) {
		iter, err := cons.Messages(pullOpts...)
		if err != nil {
			return nil, fmt.Errorf("sink %s: pull: %w", o.Name, err)
		}
		return iter, nil
	}
	if c.iter, err = pull(cons); err != nil {
		return nil, err
	}
	c.floor = floor
	c.reopen = func() (jetstream.MessagesContext, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		cons, err := ensure(ctx)
		if err != nil {
			return nil, err
		}
		c.mu.Lock()
		c.durable = cons
		c.mu.Unlock()
		if c.pin != nil {
			c.pin.setConsumer(cons)
		}
		return pull(cons)
	}
	return c, nil
}

// run dispatches messages to push until the iterator is drained: it
// decodes, acks the ones the sink's globs reject, holds the rest (kept
// alive) and passes them on in stream order. A message push refuses, or
// any that arrives after stop, is handed back.
func (c *consumer) run(stop <-chan struct{}, push func(*item) bool) {
	c.done, c.keepDone = make(chan struct{}), make(chan struct{})
	go c.keepAlive()
	go c.dispatch(stop, push)
}

func (c *consumer) dispatch(stop <-chan struct{}, push func(*item) bool) {
	defer close(c.done)
	stopping := func() bool {
		select {
		case <-stop:
			return true
		default:
			return false
		}
	}
	pass := func(it *item) {
		if c.pin != nil && !stopping() && c.pin.lost() {
			c.giveBack(it)
			return
		}
		if stopping() || !push(it) {
			c.handBack(it)
		}
	}
	for {
		var msg jetstream.Msg
		var err error
		if c.gate != nil {
			if c.pin != nil && c.pin.othersDone(c.held.len()) {
				c.openGate(pass)
				continue
			}
			if time.Now().After(c.gate.deadline) {
				c.log.Warn("sink: not all unacknowledged events of the previous run came back; going on", "missing", c.gate.pending-c.gate.seen)
				c.openGate(pass)
				continue
			}
			wait := time.Until(c.gate.deadline) + time.Millisecond
			if c.pin != nil {
				wait = min(wait, pinCheckEvery)
			}
			msg, err = c.iter.Next(jetstream.NextMaxWait(wait))
		} else {
			msg, err = c.iter.Next()
		}
		if err != nil {
			if c.isDraining() {
				if c.gate != nil {
					c.openGate(pass)
				}
				return
			}
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) || errors.Is(err, jetstream.ErrConsumerDeleted) ||
				errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrNoHeartbeat) {
				// Not stopped by the relay: the consumer (or the stream) was
				// deleted, or the server lost it. Pull again from a consumer
				// that exists, re-created after the last acked sequence.
				if !c.reopenIter(err, stop) {
					return
				}
				continue
			}
			if c.gate != nil && (time.Now().After(c.gate.deadline) || (c.pin != nil && errors.Is(err, nats.ErrTimeout))) {
				continue
			}
			c.log.Warn("sink: pulling messages", "err", err)
			select {
			case <-time.After(200 * time.Millisecond):
			case <-stop:
			}
			continue
		}
		if stopping() {
			// Drained after Stop: hand it back so it is redelivered first.
			c.back.add(msg)
			continue
		}
		it := &item{msg: msg}
		if md, err := msg.Metadata(); err == nil {
			it.seq, it.delivered = md.Sequence.Stream, md.NumDelivered
		}
		if c.pin != nil && c.gate == nil {
			if g := c.pin.changed(msg, c.held.len()); g != nil {
				c.gate = g
			}
		}
		if c.verify(msg, it.seq) != nil {
			// Not the relay's own: never delivered, never signed by a sink.
			_ = msg.Term()
			c.dropped(msg.Subject(), it.seq)
			if g := c.gate; g != nil && it.seq <= g.last {
				if g.seen++; g.seen >= g.pending {
					c.openGate(pass)
				}
			}
			continue
		}
		it.ev, it.decodeErr = event.Decode(msg.Data())
		if it.decodeErr == nil && !c.filter.Match(it.ev.ShortType()) {
			// The NATS filter is wider than the globs: not for this sink.
			_ = msg.Ack()
			continue
		}
		c.held.add(it)
		if g := c.gate; g != nil {
			g.held = append(g.held, it)
			if it.seq <= g.last {
				g.seen++
			}
			if g.seen >= g.pending {
				c.openGate(pass)
			}
			continue
		}
		pass(it)
	}
}

// startGate holds back every message until the previous run's unacked
// messages were redelivered, then releases them all in stream order.
type startGate struct {
	last     uint64 // stream sequence last delivered before this run
	pending  int    // how many of those were unacked
	seen     int
	held     []*item
	deadline time.Time
}

func (c *consumer) openGate(pass func(*item)) {
	g := c.gate
	c.gate = nil
	// Redeliveries come back in the order their AckWait expired, not
	// necessarily stream order: sort before the lanes see them.
	slices.SortFunc(g.held, func(a, b *item) int { return cmp.Compare(a.seq, b.seq) })
	for _, it := range g.held {
		pass(it)
	}
}

// drain stops pulling; run ends once the messages already pulled are
// dispatched.
func (c *consumer) drain() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.draining = true
	c.iter.Drain()
}

func (c *consumer) isDraining() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.draining
}

// reopenIter replaces the iterator after it ended on its own, retrying
// every second until it works or stop (false).
func (c *consumer) reopenIter(cause error, stop <-chan struct{}) bool {
	c.log.Warn("sink: the consumer stopped delivering; opening it again", "err", cause)
	for {
		// First wait: a server that just deleted the consumer removes its
		// files after answering, and would remove a new one's with them.
		select {
		case <-time.After(time.Second):
		case <-stop:
			return false
		}
		iter, err := c.reopen()
		if err == nil {
			c.mu.Lock()
			defer c.mu.Unlock()
			old := c.iter
			c.iter = iter
			if c.draining {
				iter.Drain()
			}
			old.Stop()
			return true
		}
		c.log.Warn("sink: cannot open the consumer again yet", "err", err)
	}
}

// release forgets a held item: it was acked, or is being handed back.
func (c *consumer) release(it *item) { c.held.remove(it) }

// handBack releases it and returns it to the server for redelivery.
func (c *consumer) handBack(it *item) {
	c.release(it)
	c.back.add(it.msg)
}

// inFlight is how many messages are held.
func (c *consumer) inFlight() int { return c.held.len() }

// close naks what was handed back, oldest first, and stops keep-alives and
// the iterator. Call it after run ended and nothing holds an item.
func (c *consumer) close() {
	c.back.flush()
	if c.keepDone != nil {
		close(c.keepDone)
	}
	c.floor.save()
	c.mu.Lock()
	c.iter.Stop()
	c.mu.Unlock()
}

// keepAlive tells the server that held messages (queued behind a lane's
// head, or being retried) are still being worked on, so they are not
// redelivered out of order.
func (c *consumer) keepAlive() {
	t := time.NewTicker(max(c.ackWait/3, 50*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-c.keepDone:
			return
		case <-t.C:
		}
		for _, m := range c.held.msgs() {
			_ = m.InProgress()
		}
		c.floor.save()
	}
}

// giveBack releases it and naks it now: a fleet member that lost its pin
// returns what it has not sent, for the pinned member to send in order.
func (c *consumer) giveBack(it *item) {
	c.release(it)
	nakNow(it.msg)
}

// current is the durable consumer as last opened.
func (c *consumer) current() jetstream.Consumer {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.durable
}
