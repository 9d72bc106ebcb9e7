package poller

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	ticks       *prometheus.CounterVec
	tickSeconds *prometheus.HistogramVec
	lastSuccess *prometheus.GaugeVec
	apiCalls    *prometheus.CounterVec
	events      *prometheus.CounterVec
	logLines    *prometheus.CounterVec

	watched        prometheus.Gauge
	watchesRefused prometheus.Counter
	watchesDropped prometheus.Counter
	streamsGone    *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, p *Poller) *metrics {
	m := &metrics{
		ticks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_poller_tick_total", Help: "Poller ticks by schedule and result (ok, error, skipped, paused).",
		}, []string{"schedule", "result"}),
		tickSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "relay_poller_tick_duration_seconds", Help: "How long poller ticks took.",
			Buckets: prometheus.ExponentialBuckets(0.01, 4, 8),
		}, []string{"schedule"}),
		lastSuccess: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "relay_poller_last_success_timestamp_seconds", Help: "When each schedule last completed without error.",
		}, []string{"schedule"}),
		apiCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_poller_api_calls_total", Help: "Cakework API calls made through the poller's client, by HTTP status (or \"error\" for no answer).",
		}, []string{"code"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_poller_events_total", Help: "Events the poller committed to the outbox, by kind.",
		}, []string{"kind"}),
		logLines: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_poller_log_lines_total", Help: "Log lines emitted, by stream kind.",
		}, []string{"kind"}),
		watched: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "relay_poller_watched_builds", Help: "Watched builds, as last counted (capped by poller.builds.max_watched).",
		}),
		watchesRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "relay_poller_watches_refused_total", Help: "Build watches refused because the watch list was at poller.builds.max_watched (their webhooks were still published).",
		}),
		watchesDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "relay_poller_watches_dropped_unknown_total", Help: "Watched builds dropped after Cakework answered 404 for poller.builds.drop_unknown_after.",
		}),
		streamsGone: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_poller_log_streams_not_found_total", Help: "Log passes answered 404 for a stream not known to be over (not a schedule failure), by stream kind.",
		}, []string{"kind"}),
	}
	if reg != nil {
		reg.MustRegister(m.ticks, m.tickSeconds, m.lastSuccess, m.apiCalls, m.events, m.logLines,
			m.watched, m.watchesRefused, m.watchesDropped, m.streamsGone,
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "relay_poller_cakework_paused_seconds", Help: "Seconds left of a 429 pause (0: none).",
			}, func() float64 {
				if u := p.client.PausedUntil(); !u.IsZero() {
					return u.Sub(p.clk.Now()).Seconds()
				}
				return 0
			}),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "relay_poller_cakework_unauthorized", Help: "1 while the Cakework API rejects the API key.",
			}, func() float64 {
				if p.Ready() != nil {
					return 1
				}
				return 0
			}))
	}
	return m
}

// countingTransport counts every HTTP exchange of the client by status.
type countingTransport struct {
	base  http.RoundTripper
	calls *prometheus.CounterVec
}

func (t countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(r)
	if err != nil {
		t.calls.WithLabelValues("error").Inc()
		return resp, err
	}
	t.calls.WithLabelValues(strconv.Itoa(resp.StatusCode)).Inc()
	return resp, nil
}

// ScheduleStatus is one schedule's section of GET /v1/status.
type ScheduleStatus struct {
	Schedule    string    `json:"schedule"`
	Ticks       int64     `json:"ticks"`
	Errors      int64     `json:"errors"`
	LastSuccess time.Time `json:"lastSuccess,omitzero"`
	LastError   time.Time `json:"lastErrorAt,omitzero"`
	LastErr     string    `json:"lastError,omitempty"`
	LastTookMs  int64     `json:"lastTookMs"`
	// Failing is set from the first failed tick until one succeeds.
	Failing      bool      `json:"failing"`
	FailingSince time.Time `json:"failingSince,omitzero"`
	Hint         string    `json:"hint,omitempty"`
}

// Status is the poller's section of GET /v1/status.
type Status struct {
	Schedules    map[string]ScheduleStatus `json:"schedules"`
	PausedUntil  time.Time                 `json:"pausedUntil,omitzero"`
	Unauthorized string                    `json:"unauthorized,omitempty"`
	VMsKnown     int                       `json:"vmsKnown"`
	// WatchedBuilds is the watch list's size as last counted, against
	// MaxWatchedBuilds; WatchesRefused counts the build watches refused at
	// that cap, WatchesDroppedUnknown those dropped after 404s.
	WatchedBuilds         int64 `json:"watchedBuilds"`
	MaxWatchedBuilds      int   `json:"maxWatchedBuilds"`
	WatchesRefused        int64 `json:"watchesRefused"`
	WatchesDroppedUnknown int64 `json:"watchesDroppedUnknown"`
}

// Status reports per-schedule last success and error counts.
func (p *Poller) Status() Status {
	st := Status{Schedules: map[string]ScheduleStatus{}, PausedUntil: p.client.PausedUntil(), VMsKnown: p.know.count(),
		WatchedBuilds: p.watched.Load(), MaxWatchedBuilds: p.cfg.Builds.MaxWatched,
		WatchesRefused: p.refused.Load(), WatchesDroppedUnknown: p.dropped.Load()}
	if err := p.Ready(); err != nil {
		st.Unauthorized = err.Error()
	}
	for name, s := range p.sched {
		s.mu.Lock()
		st.Schedules[name] = ScheduleStatus{
			Schedule: s.spec, Ticks: s.ticks, Errors: s.errors,
			LastSuccess: s.lastSuccess, LastError: s.lastError, LastErr: s.lastErr,
			LastTookMs: s.lastTook.Milliseconds(),
		}
		if h := s.health.Current(); h.Failing {
			ss := st.Schedules[name]
			ss.Failing, ss.FailingSince, ss.Hint = true, h.Since, s.hint
			st.Schedules[name] = ss
		}
		s.mu.Unlock()
	}
	return st
}
