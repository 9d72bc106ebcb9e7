package statuspage

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cakework-relay/cakework-relay/internal/clock"
)

func TestSessionsExpireAndAreCapped(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC))
	count := 0
	s := newSessions(clk, 3, time.Hour, func(n int) { count = n })
	a := s.create()
	clk.Advance(time.Minute)
	b := s.create()
	clk.Advance(time.Minute)
	c := s.create()
	clk.Advance(time.Minute)
	if count != 3 {
		t.Fatalf("gauge %d, want 3", count)
	}
	// A fourth ends the oldest.
	d := s.create()
	if _, ok := s.get(a.id); ok {
		t.Error("the oldest session outlived the cap")
	}
	for _, x := range []session{b, c, d} {
		if _, ok := s.get(x.id); !ok {
			t.Errorf("session created at %v was dropped", x.created)
		}
	}
	if count != 3 {
		t.Fatalf("gauge %d, want 3", count)
	}
	// Each lives one hour from its sign-in.
	clk.Set(b.created.Add(time.Hour))
	if _, ok := s.get(b.id); ok {
		t.Error("a session outlived its TTL")
	}
	if _, ok := s.get(d.id); !ok {
		t.Error("a younger session expired with an older one")
	}
	if _, ok := s.get(""); ok {
		t.Error("the empty id is a session")
	}
	if !d.checkCSRF(d.csrf) || d.checkCSRF("") || d.checkCSRF(c.csrf) {
		t.Error("CSRF check accepts the wrong token or refuses the right one")
	}
	s.end(d.id)
	if _, ok := s.get(d.id); ok {
		t.Error("an ended session lives on")
	}
}

func TestCrossSite(t *testing.T) {
	for _, tc := range []struct {
		host, origin, fetch string
		refused             bool
	}{
		{"relay:8080", "", "", false},
		{"relay:8080", "http://relay:8080", "same-origin", false},
		{"relay:8080", "https://relay:8080", "", false},
		{"relay:8080", "http://relay:8081", "", true},
		{"relay:8080", "http://evil", "", true},
		{"relay:8080", "null", "", true},
		{"relay:8080", "", "cross-site", true},
		{"relay:8080", "", "same-site", true},
		{"relay:8080", "", "none", true},
	} {
		r := httptestRequest(tc.host, tc.origin, tc.fetch)
		if got := crossSite(r) != ""; got != tc.refused {
			t.Errorf("host %s, Origin %q, Sec-Fetch-Site %q: refused %v, want %v (%s)", tc.host, tc.origin, tc.fetch, got, tc.refused, crossSite(r))
		}
	}
}

func TestRatesRing(t *testing.T) {
	reg := prometheus.NewRegistry()
	in := prometheus.NewCounter(prometheus.CounterOpts{Name: ingestCounter, Help: "x"})
	out := prometheus.NewCounterVec(prometheus.CounterOpts{Name: deliveryCounter, Help: "x"}, []string{"sink"})
	reg.MustRegister(in, out)
	r := newRates(reg, 3, 2*time.Second)
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	for i := range 5 {
		in.Add(float64(2 * i))
		out.WithLabelValues("a").Add(float64(i))
		out.WithLabelValues("b").Add(float64(i))
		r.sample(t0.Add(time.Duration(2*i) * time.Second))
	}
	// Samples 2..4 are kept: ingest rose 4, 6, 8 in 2 s; delivery 2×(2, 3, 4).
	v := r.view()
	want := rateView{EverySeconds: 2, Ingest: []float64{2, 3, 4}, Delivery: []float64{2, 3, 4}}
	if fmt.Sprint(v) != fmt.Sprint(want) {
		t.Fatalf("view %+v, want %+v", v, want)
	}
}

func httptestRequest(host, origin, fetch string) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "http://"+host+"/ui/signin", nil)
	if origin != "" {
		r.Header.Set("Origin", origin)
	}
	if fetch != "" {
		r.Header.Set("Sec-Fetch-Site", fetch)
	}
	return r
}
