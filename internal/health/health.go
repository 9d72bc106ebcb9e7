// Package health follows one condition that can fail and recover (a poller
// schedule, a sink's target) so that failures are loud once, not silent and
// not a flood: the owner logs at WARN when the condition starts failing and
// when it recovers, and at most once per Repeat while it keeps failing. A
// condition that flaps is not logged at every turn: once two failing
// spells began within Repeat, further ones are only counted, and told with
// the next report that is logged.
//
// A failing condition makes the relay "degraded", not unready: it can
// still accept webhooks. Degraded returns the reason /readyz and
// /v1/status show. It holds no error text: /readyz answers anyone, and
// errors can quote a target's answer; the error is in /v1/status.
package health

import (
	"fmt"
	"sync"
	"time"
)

// DefaultRepeat is how often a condition that keeps failing is logged again.
const DefaultRepeat = 5 * time.Minute

// Tracker is one condition. The zero value is ready to use (healthy); it is
// safe for concurrent use.
type Tracker struct {
	// Repeat is the least time between two "still failing" reports, and
	// the window in which at most two failing spells are logged;
	// DefaultRepeat when zero.
	Repeat time.Duration

	mu       sync.Mutex
	failing  bool
	loud     bool // this failing spell was logged, so its recovery is too
	since    time.Time
	failures int // consecutive, since the last success
	flaps    int // failing spells not logged since the last report
	// spells are when the last logged failing spells began (at most
	// flapSpells): a new spell is not logged while flapSpells of them
	// began within Repeat.
	spells  []time.Time
	lastLog time.Time
	lastErr string
}

// Change says what a report changed, and so what to log.
type Change int

const (
	// Quiet: nothing to log.
	Quiet Change = iota
	// Failing: the condition just started failing.
	Failing
	// StillFailing: it keeps failing (or keeps flapping), and Repeat has
	// passed since the last report.
	StillFailing
	// Recovered: it succeeded after a failure that was logged.
	Recovered
)

// State is a snapshot for a log line or a status page.
type State struct {
	Failing  bool
	Since    time.Time // when it started failing
	Failures int       // consecutive failures
	// Flaps is how many failing spells went unlogged since the last
	// report, because they came within Repeat of it.
	Flaps   int
	LastErr string
}

// Fail records a failure at now.
func (t *Tracker) Fail(now time.Time, err error) (Change, State) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.failures++
	t.lastErr = err.Error()
	c := Quiet
	switch {
	case !t.failing:
		t.failing, t.since = true, now
		if t.flapping(now) {
			t.flaps++
		} else {
			t.loud, t.lastLog = true, now
			t.spells = append(t.spells, now)
			c = Failing
		}
	case now.Sub(t.lastLog) >= t.repeat():
		t.loud, t.lastLog = true, now
		c = StillFailing
	}
	s := t.state()
	if c != Quiet {
		t.flaps = 0
	}
	return c, s
}

// OK records a success at now. The State is the failing spell that ended,
// if Recovered.
func (t *Tracker) OK(now time.Time) (Change, State) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.failing {
		t.failures = 0
		return Quiet, State{}
	}
	s := t.state()
	c := Quiet
	if t.loud {
		t.lastLog = now
		c = Recovered
	}
	t.failing, t.loud, t.failures, t.lastErr = false, false, 0, ""
	return c, s
}

// Current is the condition now.
func (t *Tracker) Current() State {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.state()
}

// Degraded is nil while healthy, or why not, without the error's text.
func (t *Tracker) Degraded() error {
	s := t.Current()
	if !s.Failing {
		return nil
	}
	return fmt.Errorf("failing since %s (%d in a row)", s.Since.UTC().Format(time.RFC3339), s.Failures)
}

// flapSpells is how many failing spells are logged within Repeat before
// more are only counted: a real new outage right after a recovery is still
// told at once, a condition that keeps flapping is not told every time.
const flapSpells = 2

// flapping reports whether flapSpells logged spells began within Repeat of
// now, and forgets older ones.
func (t *Tracker) flapping(now time.Time) bool {
	keep := t.spells[:0]
	for _, at := range t.spells {
		if now.Sub(at) < t.repeat() {
			keep = append(keep, at)
		}
	}
	t.spells = keep
	return len(t.spells) >= flapSpells
}

func (t *Tracker) state() State {
	return State{Failing: t.failing, Since: t.since, Failures: t.failures, Flaps: t.flaps, LastErr: t.lastErr}
}

func (t *Tracker) repeat() time.Duration {
	if t.Repeat > 0 {
		return t.Repeat
	}
	return DefaultRepeat
}
