package sinks

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// A fleet's sink: one durable consumer shared by every member, a priority
// group with the pinned_client policy. The server delivers to the one
// member it pinned, answers the others' pull requests with nothing, and
// pins another member when the pinned one sent no pull request for
// PinnedTTL (it died, froze, or lost its NATS connection). See doc.go.

// PinnedGroup is the priority group every member pulls in.
const PinnedGroup = "relay"

// pinCheckEvery is how often a gated consumer asks the server whether the
// previous member's messages are all acked or back.
const pinCheckEvery = 250 * time.Millisecond

// HdrPinID is the header the server puts on messages to the pinned client.
const HdrPinID = "Nats-Pin-Id"

func pinnedGroupOf(o *Options) string {
	if o.Member == "" {
		return ""
	}
	return PinnedGroup
}

// pullExpiry is how long a member's pull request lives: well inside
// PinnedTTL, so a live pinned member renews its pin with time to spare.
func pullExpiry(ttl time.Duration) time.Duration { return max(ttl/3, time.Second) }

// pinWatch follows the pin id on the messages this member receives. A new
// one means the server pinned this member (again): the messages the
// previous holder left unacked come back only after AckWait, so newer ones
// are held until they did (a start gate, as after a restart), or until
// the previous holder acked them all (it was frozen and thawed).
type pinWatch struct {
	consMu  sync.Mutex
	cons    jetstream.Consumer // replaced when the consumer is re-created
	ackWait time.Duration
	onPin   func(pin string)

	mu        sync.Mutex
	pin       string // the last pin id on a message; "" before any
	lastCheck time.Time
	// The server's pin, cached by serverPin.
	infoAt  time.Time
	infoPin string
	infoErr error
}

// changed returns a gate when msg carries a pin id other than the last
// one. held is how many messages this member holds (not counting msg).
func (p *pinWatch) changed(msg jetstream.Msg, held int) *startGate {
	id := msg.Headers().Get(HdrPinID)
	p.mu.Lock()
	same := id == "" || id == p.pin
	if !same {
		p.pin = id
	}
	p.mu.Unlock()
	if same {
		return nil
	}
	if p.onPin != nil {
		p.onPin(id)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	info, err := p.consumer().Info(ctx)
	if err != nil || info.NumAckPending <= held+1 {
		// Nobody else holds anything (or the server cannot say: the
		// deadline would be all a gate gives then).
		return nil
	}
	return &startGate{
		last:     info.Delivered.Stream,
		pending:  info.NumAckPending - held,
		deadline: time.Now().Add(p.ackWait + 5*time.Second),
	}
}

// othersDone reports, at most every pinCheckEvery, whether every message
// pending on the consumer is one this member holds: the previous holder's
// came back or were acked.
func (p *pinWatch) othersDone(held int) bool {
	p.mu.Lock()
	due := time.Since(p.lastCheck) >= pinCheckEvery
	if due {
		p.lastCheck = time.Now()
	}
	p.mu.Unlock()
	if !due {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	info, err := p.consumer().Info(ctx)
	return err == nil && info.NumAckPending <= held
}

// current is the last pin id this member received.
func (p *pinWatch) current() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pin
}

// activeRecord is "<sink>/active" in the sink records: the member the
// consumer was last pinned to, by that member's word.
type activeRecord struct {
	Member string    `json:"member"`
	Pin    string    `json:"pin"`
	Since  time.Time `json:"since"`
}

const activeKey = "active"

// onPin records this member as the sink's active one.
func (o *Options) onPin(pin string) {
	if o.Records == nil {
		return
	}
	rec := activeRecord{Member: o.Member, Pin: pin, Since: time.Now().UTC()}
	o.Logger.Info("sink: this member now delivers the sink (its consumer is pinned here)", "member", o.Member)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := o.Records.Update(ctx, func(tx RecordTx) error { return tx.PutSink(o.Name, activeKey, rec) }); err != nil {
			o.Logger.Warn("sink: recording the active member", "err", err)
		}
	}()
}

// serverPin is the pin id the server holds for the consumer now (""
// when none), cached for a second.
func (p *pinWatch) serverPin() (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if time.Since(p.infoAt) < time.Second {
		return p.infoPin, p.infoErr
	}
	p.infoAt = time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	p.infoPin, p.infoErr = "", nil
	info, err := p.consumer().Info(ctx)
	if err != nil {
		p.infoErr = err
		return "", err
	}
	for _, g := range info.PriorityGroups {
		if g.Group == PinnedGroup {
			p.infoPin = g.PinnedClientID
		}
	}
	return p.infoPin, nil
}

// lost reports whether the server pinned the consumer to another member
// (or to none) since this one last received a message: what this member
// still holds and has not sent must go back to the server, for the pinned
// member to send in order. When the server cannot say, nothing is lost.
func (p *pinWatch) lost() bool {
	now, err := p.serverPin()
	return err == nil && now != p.current()
}

// Active reports whether this runner delivers its sink now: always for a
// single relay; for a fleet member, while the server's pin is the one on
// the last message it received. A sender's background work that sends
// outside any event (Slack's flood summaries, card refreshes) runs only
// on the active member.
func (r *Runner) Active() bool {
	if r.o.Member == "" {
		return true
	}
	if !r.started.Load() || r.cons == nil || r.cons.pin == nil {
		return false
	}
	mine := r.cons.pin.current()
	if mine == "" {
		return false
	}
	now, err := r.cons.pin.serverPin()
	return err == nil && now == mine
}

// activeMember is the member the sink's consumer is pinned to now, as
// that member recorded it; "" when none is pinned or it has not said.
func (r *Runner) activeMember() string {
	if !r.started.Load() || r.cons == nil || r.cons.pin == nil {
		return ""
	}
	now, err := r.cons.pin.serverPin()
	if err != nil || now == "" {
		return ""
	}
	if now == r.cons.pin.current() {
		return r.o.Member
	}
	var rec activeRecord
	err = r.o.Records.View(func(tx RecordTx) error {
		_, err := tx.GetSink(r.o.Name, activeKey, &rec)
		return err
	})
	if err != nil && !errors.Is(err, context.Canceled) {
		return ""
	}
	if rec.Pin == now {
		return rec.Member
	}
	return ""
}

// setConsumer replaces the consumer (re-created after a delete).
func (p *pinWatch) setConsumer(c jetstream.Consumer) {
	p.consMu.Lock()
	p.cons = c
	p.consMu.Unlock()
}

func (p *pinWatch) consumer() jetstream.Consumer {
	p.consMu.Lock()
	defer p.consMu.Unlock()
	return p.cons
}
