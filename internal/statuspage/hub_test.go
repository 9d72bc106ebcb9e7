package statuspage

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/cakework-relay/cakework-relay/internal/httpapi"
)

// A browser that stops reading is dropped once its queue is full; the
// others keep getting everything, and the recent events stay bounded.
func TestSlowClientIsDropped(t *testing.T) {
	p, err := New(Options{HTTP: httpapi.New(httpapi.Options{}), Registerer: prometheus.NewRegistry(), ClientBuffer: 4, RecentEvents: 3})
	if err != nil {
		t.Fatal(err)
	}
	h := p.hub
	slow := &client{ch: make(chan []byte, 4), gone: make(chan struct{})}
	fast := &client{ch: make(chan []byte, 4), gone: make(chan struct{})}
	h.clients[slow], h.clients[fast] = struct{}{}, struct{}{}
	h.gen = 1
	for i := range 10 {
		h.broadcastEvent(0, []byte("stale reader")) // an old reader's event is ignored
		h.broadcast([]byte{byte(i)})
		<-fast.ch
	}
	select {
	case <-slow.gone:
	default:
		t.Fatal("the slow client was not dropped")
	}
	select {
	case <-fast.gone:
		t.Fatal("the client that kept up was dropped")
	default:
	}
	if h.count() != 1 || testutil.ToFloat64(p.dropped) != 1 || testutil.ToFloat64(p.clientsGauge) != 1 {
		t.Fatalf("clients %d, dropped %v, gauge %v; want 1, 1, 1", h.count(), testutil.ToFloat64(p.dropped), testutil.ToFloat64(p.clientsGauge))
	}
	if len(fast.ch) != 0 || len(h.recent) != 0 {
		t.Fatalf("stale events reached the clients (%d) or the recent ones (%d)", len(fast.ch), len(h.recent))
	}
}
