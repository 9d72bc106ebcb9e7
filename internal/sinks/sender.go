package sinks

import (
	"context"
	"errors"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/event"
)

// Sender is what a sink implements. Send delivers one event once. It must
// not retry on its own, must return promptly when ctx ends, and must be
// safe for concurrent use (one call per lane at a time). Errors it returns
// are shown in logs, status and dead-letter headers, so they must never
// contain a secret.
type Sender interface {
	Send(ctx context.Context, e event.Event) Result
}

// Connector is a Sender with something to set up before its first Send:
// a credentials check, background work (benthos' output Connect). The
// runner calls Connect once, at Start, before it pulls anything; an error
// fails the start. ctx bounds the connecting only: background work started
// here runs until Close.
type Connector interface {
	Connect(ctx context.Context) error
}

// Activated is a Sender with background work that sends outside any
// event (Slack's flood summaries and card refreshes): in a fleet it must
// run on the sink's active member only. The runner hands it Runner.Active
// before Connect; a single relay's is always true.
type Activated interface {
	SetActive(active func() bool)
}

// Closer is a Sender with something to undo: background work, idle
// connections. The runner calls Close once, at Stop, also when Start
// failed or never ran, so Close must work without Connect. It returns when
// the work ended or ctx did.
type Closer interface {
	Close(ctx context.Context) error
}

// Outcome is what a send achieved.
type Outcome int

const (
	// Done: delivered; the message is acked.
	Done Outcome = iota
	// Retry: not delivered, and trying again could help.
	Retry
	// GiveUp: not delivered, and trying again would not help; the event
	// goes to the dead-letter stream now.
	GiveUp
)

func (o Outcome) String() string {
	switch o {
	case Done:
		return "done"
	case Retry:
		return "retry"
	case GiveUp:
		return "give up"
	}
	return "unknown"
}

// Result is a Sender's answer.
type Result struct {
	Outcome Outcome
	// Err says why a Retry or GiveUp happened.
	Err error
	// After is the wait before the next attempt of a Retry (from
	// Retry-After, capped at an hour); zero means the framework's backoff
	// decides.
	After time.Duration
	// Disable, with GiveUp, turns the sink off until restart: every later
	// event is dead-lettered at once (HTTP 410 Gone).
	Disable bool
}

// Delivered is the Done result.
func Delivered() Result { return Result{Outcome: Done} }

// RetryLater says a retry could help, after at least d (0: backoff decides).
func RetryLater(err error, d time.Duration) Result {
	return Result{Outcome: Retry, Err: orUnknown(err), After: d}
}

// Fail says the event cannot be delivered; it is dead-lettered now.
func Fail(err error) Result { return Result{Outcome: GiveUp, Err: orUnknown(err)} }

// FailAndDisable says the target is gone for good: dead-letter this event and
// every later one until restart.
func FailAndDisable(err error) Result {
	return Result{Outcome: GiveUp, Err: orUnknown(err), Disable: true}
}

func orUnknown(err error) error {
	if err == nil {
		return errors.New("unknown error")
	}
	return err
}
