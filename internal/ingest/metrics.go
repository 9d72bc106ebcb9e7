package ingest

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// outcome is the outcome label of relay_ingest_requests_total.
type outcome int

const (
	outAccepted outcome = iota
	outDuplicate
	outBadRequest
	outUnauthorized
	outTooLarge
	outUnsupported
	outUnavailable
	outOff
	outNotFound
	outCanceled
	outBusy
	numOutcomes
)

var outcomeNames = [numOutcomes]string{
	outAccepted:     "accepted",
	outDuplicate:    "duplicate",
	outBadRequest:   "bad_request",
	outUnauthorized: "unauthorized",
	outTooLarge:     "too_large",
	outUnsupported:  "unsupported_media_type",
	outUnavailable:  "unavailable",
	outOff:          "off",
	outNotFound:     "not_found",
	outCanceled:     "canceled",
	outBusy:         "busy",
}

type metrics struct {
	requests         *prometheus.CounterVec
	duration         *prometheus.HistogramVec
	inFlight         prometheus.Gauge
	inFlightRefused  prometheus.Counter
	watchesNotQueued prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_ingest_requests_total",
			Help: "Webhook requests by receiver and outcome (accepted, duplicate, bad_request, unauthorized, too_large, unsupported_media_type, unavailable, off, not_found, canceled, busy: past http.max_body_bytes_in_flight).",
		}, []string{"receiver", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "relay_ingest_request_duration_seconds",
			Help:    "Time from a webhook request's arrival to its answer, including the durable commit.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"receiver"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "relay_ingest_body_bytes_in_flight",
			Help: "Webhook body bytes reserved by requests being read or handled now (capped by http.max_body_bytes_in_flight).",
		}),
		inFlightRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "relay_ingest_body_bytes_refused_total",
			Help: "Webhook requests answered 503 because their body would pass http.max_body_bytes_in_flight.",
		}),
		watchesNotQueued: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "relay_ingest_watches_not_queued_total",
			Help: "Builds seen by webhook (published) whose poller watch was not queued: poller.builds.max_watched watches already waited for the poller.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	var err error
	m.requests, err = register(reg, m.requests)
	if err != nil {
		return nil, err
	}
	m.duration, err = register(reg, m.duration)
	if err != nil {
		return nil, err
	}
	m.inFlight, err = register(reg, m.inFlight)
	if err != nil {
		return nil, err
	}
	m.inFlightRefused, err = register(reg, m.inFlightRefused)
	if err != nil {
		return nil, err
	}
	m.watchesNotQueued, err = register(reg, m.watchesNotQueued)
	if err != nil {
		return nil, err
	}
	return m, nil
}

// register tolerates a second Ingest on the same registry (tests, a
// restarted component) by sharing the collector already there.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing, nil
			}
		}
		return c, err
	}
	return c, nil
}

// observer holds one receiver's resolved series, so a request does no label
// lookups.
type observer struct {
	counts [numOutcomes]prometheus.Counter
	dur    prometheus.Observer
}

func (m *metrics) forReceiver(name string) observer {
	var o observer
	for i := range o.counts {
		o.counts[i] = m.requests.WithLabelValues(name, outcomeNames[i])
	}
	o.dur = m.duration.WithLabelValues(name)
	return o
}

func (o *observer) done(oc outcome, d time.Duration) {
	o.counts[oc].Inc()
	o.dur.Observe(d.Seconds())
}
