package statuspage

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The counters behind the charts: events the outbox published to the bus
// (every event the relay ingested or polled), and events the sinks
// delivered, summed over sinks.
const (
	ingestCounter   = "relay_outbox_published_total"
	deliveryCounter = "relay_sink_delivered_total"
)

// rates keeps the per-second ingest and delivery rates of the last
// points samples, a ring buffer.
type rates struct {
	g     prometheus.Gatherer
	every time.Duration

	mu       sync.Mutex
	ingest   []float64
	delivery []float64
	next     int // where the next sample goes
	n        int // samples held, up to len(ingest)
	last     time.Time
	lastIn   float64
	lastOut  float64
}

func newRates(g prometheus.Gatherer, points int, every time.Duration) *rates {
	return &rates{g: g, every: every, ingest: make([]float64, points), delivery: make([]float64, points)}
}

// sample reads the counters at now and records the rates since the last
// sample. The first sample only sets the baseline.
func (r *rates) sample(now time.Time) {
	in, out := counterSums(r.g, ingestCounter, deliveryCounter)
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.last.IsZero() {
		if dt := now.Sub(r.last).Seconds(); dt > 0 {
			r.ingest[r.next] = max(in-r.lastIn, 0) / dt
			r.delivery[r.next] = max(out-r.lastOut, 0) / dt
			r.next = (r.next + 1) % len(r.ingest)
			r.n = min(r.n+1, len(r.ingest))
		}
	}
	r.last, r.lastIn, r.lastOut = now, in, out
}

// rateView is the charts' data, oldest first, events per second.
type rateView struct {
	EverySeconds float64   `json:"everySeconds"`
	Ingest       []float64 `json:"ingest"`
	Delivery     []float64 `json:"delivery"`
}

func (r *rates) view() rateView {
	r.mu.Lock()
	defer r.mu.Unlock()
	v := rateView{EverySeconds: r.every.Seconds(), Ingest: make([]float64, 0, r.n), Delivery: make([]float64, 0, r.n)}
	start := (r.next - r.n + len(r.ingest)) % len(r.ingest)
	for i := range r.n {
		j := (start + i) % len(r.ingest)
		v.Ingest = append(v.Ingest, r.ingest[j])
		v.Delivery = append(v.Delivery, r.delivery[j])
	}
	return v
}

// counterSums sums counters a and b over its labels; a counter not (yet)
// registered is 0.
func counterSums(g prometheus.Gatherer, a, b string) (float64, float64) {
	sums := map[string]float64{}
	if g != nil {
		mfs, _ := g.Gather() // a partial answer still has the counters it could read
		for _, mf := range mfs {
			for _, m := range mf.GetMetric() {
				if c := m.GetCounter(); c != nil {
					sums[mf.GetName()] += c.GetValue()
				}
			}
		}
	}
	return sums[a], sums[b]
}
