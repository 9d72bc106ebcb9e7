// Command sinks benchmarks the HTTP callback sink end to end: events are
// published on an embedded JetStream (as the outbox does), delivered by a
// sinks.Runner with the httpcb sender, and received by a local HTTP server
// that verifies every Standard Webhooks signature.
//
// It reports delivered events per second and the latency from the bus
// publish to the callback arriving (p50, p99).
//
//	go run ./bench/sinks -n 20000 -concurrency 8            # burst: throughput
//	go run ./bench/sinks -n 5000 -rate 1000 -concurrency 8  # paced: latency
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"sync"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/cakework-relay/cakework-relay/internal/bus"
	"github.com/cakework-relay/cakework-relay/internal/event"
	"github.com/cakework-relay/cakework-relay/internal/sinks"
	"github.com/cakework-relay/cakework-relay/internal/sinks/httpcb"
	"github.com/cakework-relay/cakework-relay/internal/state"
)

const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

func main() {
	n := flag.Int("n", 20000, "events")
	resources := flag.Int("resources", 200, "distinct builds/VMs the events are about")
	conc := flag.Int("concurrency", 8, "sink concurrency (lanes)")
	rate := flag.Int("rate", 0, "publish rate per second; 0 publishes as fast as possible")
	verify := flag.Bool("verify", true, "receiver verifies signatures")
	flag.Parse()
	if err := run(*n, *resources, *conc, *rate, *verify); err != nil {
		log.Fatal(err)
	}
}

func run(n, resources, conc, rate int, verify bool) error {
	dir, err := os.MkdirTemp("", "bench-sinks")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	ctx := context.Background()
	b, err := bus.Open(ctx, bus.Options{StoreDir: bus.StoreDir(dir), DuplicateWindow: time.Minute, MaxAge: time.Hour})
	if err != nil {
		return err
	}
	defer b.Close(ctx)
	st, err := state.Open(state.Options{Dir: dir})
	if err != nil {
		return err
	}
	defer st.Close()

	wh, _ := standardwebhooks.NewWebhook(secret)
	var mu sync.Mutex
	sent := make(map[string]time.Time, n)
	lat := make([]time.Duration, 0, n)
	var last time.Time
	done := make(chan struct{})
	badSig := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		now := time.Now()
		if verify && wh.Verify(body, r.Header) != nil {
			mu.Lock()
			badSig++
			mu.Unlock()
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		id := r.Header.Get("webhook-id")
		mu.Lock()
		if t, ok := sent[id]; ok {
			lat = append(lat, now.Sub(t))
			delete(sent, id)
			last = now
			if len(lat) == n {
				close(done)
			}
		}
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()

	s, err := httpcb.New(httpcb.Config{Name: "bench", URL: srv.URL, Secret: secret, Concurrency: conc, Timeout: 5 * time.Second}, httpcb.Options{})
	if err != nil {
		return err
	}
	o := s.SinkOptions()
	o.Bus, o.Store = b, st
	o.MaxAckPending = 1024
	r, err := sinks.NewRunner(s, o)
	if err != nil {
		return err
	}
	if err := r.Start(ctx); err != nil {
		return err
	}
	defer r.Stop(ctx)

	// Build events first so the publish loop only publishes.
	type pre struct {
		subj, id string
		raw      []byte
	}
	evs := make([]pre, n)
	for i := range n {
		kind := []string{event.KindBuild, event.KindVM}[i%2]
		e, err := event.New(kind, fmt.Sprintf("r%d", i%resources), "log", event.ID("bench", fmt.Sprint(i)), time.Now(),
			map[string]any{"lines": []map[string]any{{"message": "step 3/7: RUN make", "level": "info", "timestamp": i}}})
		if err != nil {
			return err
		}
		raw, _ := json.Marshal(e)
		evs[i] = pre{e.NATSSubject(b.SubjectPrefix()), e.ID, raw}
	}
	var tick <-chan time.Time
	if rate > 0 {
		t := time.NewTicker(time.Second / time.Duration(rate))
		defer t.Stop()
		tick = t.C
	}
	start := time.Now()
	for i, e := range evs {
		if tick != nil {
			<-tick
		}
		mu.Lock()
		sent[e.id] = time.Now()
		mu.Unlock()
		if _, err := b.PublishAsync(e.subj, e.id, e.raw, nil); err != nil {
			return fmt.Errorf("publish %d: %w", i, err)
		}
	}
	pubDone := time.Since(start)
	select {
	case <-done:
	case <-time.After(5 * time.Minute):
		return fmt.Errorf("timed out: %d of %d delivered", len(lat), n)
	}
	mu.Lock()
	elapsed := last.Sub(start)
	slices.Sort(lat)
	p := func(q float64) time.Duration { return lat[min(len(lat)-1, int(q*float64(len(lat))))] }
	fmt.Printf("events=%d resources=%d concurrency=%d rate=%s verify=%v\n", n, resources, conc, rateDesc(rate), verify)
	fmt.Printf("published in %s; delivered all in %s: %.0f events/s\n", pubDone.Round(time.Millisecond), elapsed.Round(time.Millisecond), float64(n)/elapsed.Seconds())
	fmt.Printf("latency publish->callback: p50=%s p90=%s p99=%s max=%s\n", p(.5).Round(10*time.Microsecond), p(.9).Round(10*time.Microsecond), p(.99).Round(10*time.Microsecond), lat[len(lat)-1].Round(10*time.Microsecond))
	st2 := r.Status()
	fmt.Printf("sink status: delivered=%d failed=%d bad signatures=%d\n", st2.Delivered, st2.Failed, badSig)
	mu.Unlock()
	return nil
}

func rateDesc(r int) string {
	if r == 0 {
		return "burst"
	}
	return fmt.Sprintf("%d/s", r)
}
