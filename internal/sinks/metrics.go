package sinks

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the per-sink Prometheus series. One set is registered per
// registry and shared by every runner (label sink).
type Metrics struct {
	delivered *prometheus.CounterVec
	failed    *prometheus.CounterVec
	retried   *prometheus.CounterVec
	dlq       *prometheus.CounterVec
	duration  *prometheus.HistogramVec
	disabled  *prometheus.GaugeVec
	forged    *prometheus.CounterVec
}

// NewMetrics creates the series and registers them on reg (nil: not
// registered, for tests).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		delivered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_sink_delivered_total", Help: "Events a sink delivered.",
		}, []string{"sink"}),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_sink_failed_total", Help: "Send attempts that did not deliver (retried or given up).",
		}, []string{"sink"}),
		retried: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_sink_retried_total", Help: "Retries scheduled after a failed attempt.",
		}, []string{"sink"}),
		dlq: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_sink_dlq_total", Help: "Events sent to the dead-letter stream.",
		}, []string{"sink"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "relay_sink_send_duration_seconds", Help: "Duration of one send attempt.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"sink"}),
		disabled: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "relay_sink_disabled", Help: "1 while a sink is disabled (its target answered 410 Gone).",
		}, []string{"sink"}),
		forged: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_sink_unverified_total", Help: "Messages on the stream the relay did not publish (no valid Relay-Mac): dropped, never delivered.",
		}, []string{"sink"}),
	}
	if reg != nil {
		reg.MustRegister(m.delivered, m.failed, m.retried, m.dlq, m.duration, m.disabled, m.forged)
	}
	return m
}

// sinkMetrics are one sink's children, resolved once.
type sinkMetrics struct {
	delivered, failed, retried, dlq prometheus.Counter
	duration                        prometheus.Observer
	disabled                        prometheus.Gauge
	unverified                      prometheus.Counter
}

func (m *Metrics) forSink(name string) sinkMetrics {
	return sinkMetrics{
		delivered: m.delivered.WithLabelValues(name),
		failed:    m.failed.WithLabelValues(name),
		retried:   m.retried.WithLabelValues(name),
		dlq:       m.dlq.WithLabelValues(name),
		duration:  m.duration.WithLabelValues(name),
		disabled:  m.disabled.WithLabelValues(name),

		unverified: m.forged.WithLabelValues(name),
	}
}
