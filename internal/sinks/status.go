package sinks

import (
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/bus"
	"github.com/cakework-relay/cakework-relay/internal/clock"
	"github.com/cakework-relay/cakework-relay/internal/event"
	"github.com/cakework-relay/cakework-relay/internal/health"
)

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

// tracker is what a sink reports: counters, metrics, the last error and
// the target's health, with the WARN logs of its transitions. It is the
// delivery policy's Recorder, and the dead-letter stage counts on it.
type tracker struct {
	name, kind, endpoint string
	maxAttempts          int
	clock                clock.Clock
	log                  *slog.Logger
	m                    sinkMetrics

	delivered, failed, retried, deadLettered atomic.Uint64

	// health makes a failing target loud once: WARN when sends start
	// failing and when one succeeds again, and "degraded" meanwhile.
	health health.Tracker

	mu        sync.Mutex
	lastErr   string
	lastErrAt time.Time
}

func (t *tracker) Sent(took time.Duration) { t.m.duration.Observe(took.Seconds()) }

func (t *tracker) Delivered() {
	t.delivered.Add(1)
	t.m.delivered.Inc()
	t.noteHealth(nil)
}

func (t *tracker) Failed(err error) {
	t.failed.Add(1)
	t.m.failed.Inc()
	t.noteError(err)
	t.noteHealth(err)
}

func (t *tracker) Retrying(e event.Event, attempt int, wait time.Duration, err error) {
	t.retried.Add(1)
	t.m.retried.Inc()
	t.log.Debug("sink: send failed; retrying", "event", e.ID, "attempt", attempt, "wait", wait, "err", err)
}

func (t *tracker) Disabled(err error) {
	t.m.disabled.Set(1)
	t.log.Error("SINK DISABLED: its target is gone; every event for this sink now goes to the dead-letter stream until the relay restarts. Fix the target, restart, then replay with 'relay dlq replay -all'",
		"err", err, "dlq_subject", bus.DLQSubject(t.name))
}

// deadLetter counts an event stored on the dead-letter stream.
func (t *tracker) deadLetter() {
	t.deadLettered.Add(1)
	t.m.dlq.Inc()
}

func (t *tracker) noteError(err error) {
	t.mu.Lock()
	t.lastErr = truncate(err.Error(), 1000)
	t.lastErrAt = t.clock.Now()
	t.mu.Unlock()
}

// noteHealth logs the target's failing and recovered transitions at WARN,
// with the endpoint and the last answer, and a reminder at most every
// health.DefaultRepeat while it keeps failing.
func (t *tracker) noteHealth(err error) {
	now := t.clock.Now()
	if err == nil {
		if c, st := t.health.OK(now); c == health.Recovered {
			t.log.Warn("sink recovered: a send succeeded", "endpoint", t.endpoint, "failures", st.Failures,
				"failing_for", now.Sub(st.Since).Round(time.Second))
		}
		return
	}
	c, st := t.health.Fail(now, err)
	switch c {
	case health.Failing:
		t.log.Warn("sink failing: its events are retried with backoff, then dead-lettered; check the endpoint",
			"endpoint", t.endpoint, "err", err, "max_attempts", t.maxAttempts)
	case health.StillFailing:
		t.log.Warn("sink still failing", "endpoint", t.endpoint, "err", err, "failures", st.Failures,
			"since", st.Since.UTC().Format(time.RFC3339))
	}
}

// degraded is nil while the last send succeeded (or none failed), or why
// the sink is degraded.
func (t *tracker) degraded() error {
	if err := t.health.Degraded(); err != nil {
		return fmt.Errorf("%s (%s) %w", t.name, t.endpoint, err)
	}
	return nil
}

// status is the tracker's part of Status.
func (t *tracker) status() Status {
	s := Status{
		Kind:         t.kind,
		Endpoint:     t.endpoint,
		Delivered:    t.delivered.Load(),
		Failed:       t.failed.Load(),
		Retried:      t.retried.Load(),
		DeadLettered: t.deadLettered.Load(),
	}
	if h := t.health.Current(); h.Failing {
		at := h.Since.UTC()
		s.Failing, s.FailingSince = true, &at
	}
	t.mu.Lock()
	defer t.mu.Unlock()
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
