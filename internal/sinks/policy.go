package sinks

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/backoff"
	"github.com/cakework-relay/cakework-relay/internal/clock"
	"github.com/cakework-relay/cakework-relay/internal/event"
)

// maxRetryAfter caps a target's Retry-After so one bad header cannot park a
// lane for days.
const maxRetryAfter = time.Hour

// RetryDefaults is r made usable for a schedule: the defaults of unset
// (or, in a Retry built in code, negative) fields, as RetryConfig.WithDefaults,
// and a MaxInterval below Initial raised to it. A validated Retry comes out
// unchanged.
func RetryDefaults(r RetryConfig) RetryConfig {
	r.Initial = max(r.Initial, 0)
	r.MaxInterval = max(r.MaxInterval, 0)
	r.MaxAttempts = max(r.MaxAttempts, 0)
	r = r.WithDefaults()
	if r.MaxInterval < r.Initial {
		r.MaxInterval = r.Initial
	}
	return r
}

// Schedule is when a sink's failed deliveries are tried again: its Retry
// settings over the shared backoff. Senders with deliveries of their own
// (Slack's flood summaries) ask it too, so no sink has a schedule of its
// own. Safe for concurrent use.
type Schedule struct {
	retry RetryConfig
	b     backoff.Backoff
}

// NewSchedule is the schedule of r, defaults filled in (RetryDefaults).
func NewSchedule(r RetryConfig) Schedule {
	r = RetryDefaults(r)
	// Equal jitter (the default): lanes that failed together don't retry
	// together, and none retries sooner than half its schedule.
	return Schedule{retry: r, b: backoff.Backoff{Initial: r.Initial, Max: r.MaxInterval}}
}

// Wait is the wait after the attempt-th failed attempt (1-based): the
// target's own delay (Retry-After) when it gave one, capped at an hour;
// otherwise Initial doubling up to MaxInterval, jittered. The target's
// delay wins both ways, as before the stages were split: a target that
// asks for 1s again and again is tried every second until max_attempts.
func (s Schedule) Wait(attempt int, after time.Duration) time.Duration {
	if after > 0 {
		return min(after, maxRetryAfter)
	}
	return s.b.Delay(attempt)
}

// MaxAttempts is how many attempts an event gets before it is
// dead-lettered.
func (s Schedule) MaxAttempts() int { return s.retry.MaxAttempts }

// Attempts keeps one message's attempt count while it is retried, so a
// restart continues the count instead of restarting it.
type Attempts interface {
	// Load is how many attempts were made before (0 if unknown).
	Load() int
	// Retrying records that attempt n failed with err and will be retried.
	Retrying(n int, err error)
}

// FreshAttempts is an attempt count that starts at 0 and is not kept: a
// replay gets a fresh budget.
type FreshAttempts struct{}

func (FreshAttempts) Load() int           { return 0 }
func (FreshAttempts) Retrying(int, error) {}

// Recorder hears about every attempt; the runner's counters, metrics and
// health logs hang off it. Calls come from several lanes at once.
type Recorder interface {
	// Sent: a send returned after took (cancelled ones included).
	Sent(took time.Duration)
	Delivered()
	// Failed: a send did not deliver (it will be retried or given up).
	Failed(err error)
	// Retrying: attempt failed and the next one comes after wait.
	Retrying(e event.Event, attempt int, wait time.Duration, err error)
	// Disabled: the sink was just disabled (once).
	Disabled(err error)
}

// Verdict is how a delivery ended.
type Verdict int

const (
	// Acked: the sender reported Done; ack the message.
	Acked Verdict = iota
	// DeadLettered: given up (GiveUp, MaxAttempts, or the sink is
	// disabled); store it on the dead-letter stream.
	DeadLettered
	// Interrupted: the runner is stopping; hand the message back.
	Interrupted
)

func (v Verdict) String() string {
	switch v {
	case Acked:
		return "acked"
	case DeadLettered:
		return "dead-lettered"
	case Interrupted:
		return "interrupted"
	}
	return "unknown"
}

// Delivery is what Deliver did.
type Delivery struct {
	Verdict Verdict
	// Err is why, for DeadLettered.
	Err error
	// Attempts counts every attempt so far, earlier runs included.
	Attempts int
}

// PolicyOptions configure a Policy. Name is required.
type PolicyOptions struct {
	// Name is the sink's name, for errors.
	Name     string
	Retry    RetryConfig
	Clock    clock.Clock
	Recorder Recorder
}

// Policy is the delivery stage: it sends one event through a Sender,
// retrying on the sink's Schedule, counting attempts, giving up after
// MaxAttempts, and disabling the sink when the target is gone (GiveUp with
// Disable). It knows nothing of NATS: the runner turns its Verdict into an
// ack, a dead letter or a hand-back. Waits are on the injected clock.
type Policy struct {
	name     string
	sender   Sender
	schedule Schedule
	clock    clock.Clock
	rec      Recorder

	mu       sync.Mutex
	disabled *disabledState
}

type disabledState struct {
	at     time.Time
	reason string
}

// NewPolicy builds the delivery policy of one sink over s.
func NewPolicy(s Sender, o PolicyOptions) (*Policy, error) {
	if s == nil {
		return nil, fmt.Errorf("sinks: sink %s: nil sender", o.Name)
	}
	if o.Name == "" {
		return nil, fmt.Errorf("sinks: a delivery policy needs the sink's name")
	}
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.Recorder == nil {
		o.Recorder = nopRecorder{}
	}
	return &Policy{name: o.Name, sender: s, schedule: NewSchedule(o.Retry), clock: o.Clock, rec: o.Recorder}, nil
}

// Schedule is the policy's retry schedule.
func (p *Policy) Schedule() Schedule { return p.schedule }

// Deliver sends e until it is delivered, must be dead-lettered, or is
// interrupted. ctx is given to every send: cancelling it aborts the send in
// flight, and that attempt does not count. stop ends a wait between
// attempts and prevents the next one, but lets a send in flight finish (a
// clean stop). a supplies the attempts made before and records failures
// that will be retried.
func (p *Policy) Deliver(ctx context.Context, stop <-chan struct{}, e event.Event, a Attempts) Delivery {
	attempts := a.Load()
	for {
		if err := p.Disabled(); err != nil {
			return Delivery{DeadLettered, err, attempts}
		}
		select {
		case <-stop:
			return Delivery{Verdict: Interrupted, Attempts: attempts}
		default:
		}
		attempts++
		start := time.Now() // a metric of the target, so real time
		res := p.sender.Send(ctx, e)
		p.rec.Sent(time.Since(start))
		if res.Outcome == Done {
			p.rec.Delivered()
			return Delivery{Verdict: Acked, Attempts: attempts}
		}
		if ctx.Err() != nil {
			// Cancelled by shutdown: that attempt doesn't count.
			return Delivery{Verdict: Interrupted, Attempts: attempts - 1}
		}
		err := orUnknown(res.Err)
		p.rec.Failed(err)
		if res.Outcome == GiveUp {
			if res.Disable {
				p.disable(err)
			}
			return Delivery{DeadLettered, err, attempts}
		}
		if attempts >= p.schedule.MaxAttempts() {
			return Delivery{DeadLettered, fmt.Errorf("gave up after %d attempts: %w", attempts, err), attempts}
		}
		wait := p.schedule.Wait(attempts, res.After)
		a.Retrying(attempts, err)
		p.rec.Retrying(e, attempts, wait, err)
		if wait <= 0 {
			continue
		}
		select {
		case <-stop:
			return Delivery{Verdict: Interrupted, Attempts: attempts}
		case <-p.clock.After(wait):
		}
	}
}

func (p *Policy) disable(err error) {
	p.mu.Lock()
	already := p.disabled != nil
	if !already {
		p.disabled = &disabledState{at: p.clock.Now(), reason: truncate(err.Error(), 1000)}
	}
	p.mu.Unlock()
	if !already {
		p.rec.Disabled(err)
	}
}

// Disabled is nil while the sink is enabled, or the error its dead
// letters get.
func (p *Policy) Disabled() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.disabled == nil {
		return nil
	}
	return fmt.Errorf("sink %s is disabled since %s (%s); restart the relay once the target is fixed",
		p.name, p.disabled.at.UTC().Format(time.RFC3339), p.disabled.reason)
}

// disabledSince reports when and why the sink was disabled (ok false: it
// is not).
func (p *Policy) disabledSince() (at time.Time, reason string, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.disabled == nil {
		return time.Time{}, "", false
	}
	return p.disabled.at, p.disabled.reason, true
}

type nopRecorder struct{}

func (nopRecorder) Sent(time.Duration)                              {}
func (nopRecorder) Delivered()                                      {}
func (nopRecorder) Failed(error)                                    {}
func (nopRecorder) Retrying(event.Event, int, time.Duration, error) {}
func (nopRecorder) Disabled(error)                                  {}
