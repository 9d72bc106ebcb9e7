package sinks

import (
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/bus"
	"github.com/cakework-relay/cakework-relay/internal/clock"
	"github.com/cakework-relay/cakework-relay/internal/event"
	"github.com/cakework-relay/cakework-relay/internal/health"
)

// Status is a sink's section of GET /v1/status. Counters are since start.
type Status struct {
	Kind         string `json:"kind"`
	Endpoint     string `json:"endpoint,omitempty"`
	Delivered    uint64 `json:"delivered"`
	Failed       uint64 `json:"failed"`
	Retried      uint64 `json:"retried"`
	DeadLettered uint64 `json:"deadLettered"`
	InFlight     int    `json:"inFlight"`
	// Pending is the sink's lag: events on the stream it has not finished
	// (not yet delivered to it, or delivered and not acknowledged), from
	// its durable consumer. Absent before Start or when the bus does not
	// answer.
	Pending     *uint64    `json:"pending,omitempty"`
	LastError   string     `json:"lastError,omitempty"`
	LastErrorAt *time.Time `json:"lastErrorAt,omitempty"`
	// Failing is set from a failed send until one succeeds.
	Failing        bool       `json:"failing"`
	FailingSince   *time.Time `json:"failingSince,omitempty"`
	Disabled       bool       `json:"disabled"`
	DisabledAt     *time.Time `json:"disabledAt,omitempty"`
	DisabledReason string     `json:"disabledReason,omitempty"`
	// ActiveMember is, in a fleet, the member that delivers this sink now
	// (its consumer is pinned there); empty while none is.
	ActiveMember string `json:"activeMember,omitempty"`
}

// tracker is what a sink reports: counters, metrics, the last error and
// the target's health, with the WARN logs of its transitions. It is the
// delivery policy's Recorder, and the dead-letter stage counts on it.
type tracker struct {
	name, kind, endpoint string
	maxAttempts          int
	clock                clock.Clock
	log                  *slog.Logger
	m                    sinkMetrics

	// health makes a failing target loud once: WARN when sends start
	// failing and when one succeeds again, and "degraded" meanwhile.
	health health.Tracker

	mu                                       sync.Mutex
	delivered, failed, retried, deadLettered uint64
	unverified, unverifiedLogged             uint64
	unverifiedWarnAt                         time.Time
	lastErr                                  string
	lastErrAt                                time.Time
}

// Unverified counts a message the relay did not publish, dropped
// undelivered, and WARNs at most once a minute with how many since.
func (t *tracker) Unverified(subject string, seq uint64) {
	t.m.unverified.Inc()
	now := t.clock.Now()
	t.mu.Lock()
	t.unverified++
	if !t.unverifiedWarnAt.IsZero() && now.Sub(t.unverifiedWarnAt) < time.Minute {
		t.mu.Unlock()
		return
	}
	n := t.unverified - t.unverifiedLogged
	t.unverifiedLogged, t.unverifiedWarnAt = t.unverified, now
	t.mu.Unlock()
	t.log.Warn("sink: dropped messages the relay did not publish (no valid "+bus.HdrMAC+"); something else publishes into the stream",
		"count", n, "last_subject", subject, "last_seq", seq)
}

func (t *tracker) Sent(took time.Duration) { t.m.duration.Observe(took.Seconds()) }

// Delivered counts a delivery and logs the target's recovery (WARN, once
// per failing period).
func (t *tracker) Delivered() {
	t.m.delivered.Inc()
	t.mu.Lock()
	t.delivered++
	t.mu.Unlock()
	now := t.clock.Now()
	c, st := t.health.OK(now)
	if c != health.Recovered {
		return
	}
	t.log.Warn("sink recovered: a send succeeded", "endpoint", t.endpoint, "failures", st.Failures,
		"failing_for", now.Sub(st.Since).Round(time.Second))
}

// Failed counts a failed send and keeps its error. It logs at WARN when
// the target starts failing, with the endpoint and its answer, and as a
// reminder at most every health.DefaultRepeat while it keeps failing.
func (t *tracker) Failed(err error) {
	t.m.failed.Inc()
	t.mu.Lock()
	t.failed++
	t.mu.Unlock()
	t.noteError(err)
	c, st := t.health.Fail(t.clock.Now(), err)
	switch c {
	case health.Failing:
		attrs := []any{"endpoint", t.endpoint, "err", err, "max_attempts", t.maxAttempts}
		if st.Flaps > 0 {
			attrs = append(attrs, "flaps_since_last_report", st.Flaps)
		}
		t.log.Warn("sink failing: its events are retried with backoff, then dead-lettered; check the endpoint", attrs...)
	case health.StillFailing:
		t.log.Warn("sink still failing", "endpoint", t.endpoint, "err", err, "failures", st.Failures,
			"since", st.Since.UTC().Format(time.RFC3339), "flaps_since_last_report", st.Flaps)
	}
}

func (t *tracker) Retrying(e event.Event, attempt int, wait time.Duration, err error) {
	t.m.retried.Inc()
	t.mu.Lock()
	t.retried++
	t.mu.Unlock()
	t.log.Debug("sink: send failed; retrying", "event", e.ID, "attempt", attempt, "wait", wait, "err", err)
}

func (t *tracker) Disabled(err error) {
	t.m.disabled.Set(1)
	t.log.Error("SINK DISABLED: its target is gone; every event for this sink now goes to the dead-letter stream until the relay restarts. Fix the target, restart, then replay with 'relay dlq replay -all'",
		"err", err, "dlq_subject", bus.DLQSubject(t.name))
}

// deadLetter counts an event stored on the dead-letter stream.
func (t *tracker) deadLetter() {
	t.m.dlq.Inc()
	t.mu.Lock()
	t.deadLettered++
	t.mu.Unlock()
}

// noteError keeps err as the last error.
func (t *tracker) noteError(err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.lastErr = truncate(err.Error(), 1000)
	t.lastErrAt = t.clock.Now()
}

// degraded is nil while the last send succeeded (or none failed), or why
// the sink is degraded.
func (t *tracker) degraded() error {
	if err := t.health.Degraded(); err != nil {
		// No endpoint and no error text: /readyz answers anyone. Both are
		// in /v1/status, behind the admin token.
		return fmt.Errorf("%s %w; see /v1/status", t.name, err)
	}
	return nil
}

// status is the tracker's part of Status.
func (t *tracker) status() Status {
	s := Status{Kind: t.kind, Endpoint: t.endpoint}
	if h := t.health.Current(); h.Failing {
		at := h.Since.UTC()
		s.Failing, s.FailingSince = true, &at
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	s.Delivered, s.Failed, s.Retried, s.DeadLettered = t.delivered, t.failed, t.retried, t.deadLettered
	if t.lastErr != "" {
		s.LastError = t.lastErr
		at := t.lastErrAt.UTC()
		s.LastErrorAt = &at
	}
	return s
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
