// Command e2e measures the relay end to end: a token-authed
// Cakework build webhook in, the HTTP callback out. It runs the real relay
// in-process (bbolt in a temp dir, embedded JetStream, the outbox
// publisher, the callback sink) and a local receiver, sends webhooks at a
// fixed rate, and reports latency from the start of each POST to the
// callback's arrival, and the delivered rate.
//
//	go run ./bench/e2e -rate 500 -n 10000
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cakework-relay/cakework-relay/internal/app"
	"github.com/cakework-relay/cakework-relay/internal/config"
	"github.com/cakework-relay/cakework-relay/internal/sinks/httpcb"
)

func main() {
	rate := flag.Int("rate", 500, "webhooks per second")
	n := flag.Int("n", 10000, "webhooks to send")
	concurrency := flag.Int("concurrency", 8, "callback sink concurrency")
	flag.Parse()
	if err := run(*rate, *n, *concurrency); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
}

func run(rate, n, concurrency int) error {
	var mu sync.Mutex
	sent := make(map[string]time.Time, n)
	arrived := make(map[string]time.Time, n)
	done := make(chan struct{})
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("webhook-id")
		_, _ = io.Copy(io.Discard, r.Body)
		now := time.Now()
		mu.Lock()
		if _, dup := arrived[id]; !dup {
			arrived[id] = now
			if len(arrived) == n {
				close(done)
			}
		}
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	defer rcv.Close()

	dir, err := os.MkdirTemp("", "relay-e2e-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	cfg := config.Default(func(string) (string, bool) { return "", false })
	cfg.DataDir = dir
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.Bus.Embedded.Listen = ""
	cfg.Ingest.Cakework.Configured = true
	cfg.Ingest.Cakework.Token = "e2e-token"
	cfg.Sinks.HTTP = []httpcb.Config{{Name: "app", URL: rcv.URL, Events: []string{"build.*"}, Concurrency: concurrency}}
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		return err
	}
	a, err := app.New(app.Options{Config: cfg, Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		return err
	}
	ctx := context.Background()
	if err := a.Start(ctx); err != nil {
		return err
	}
	defer a.Stop(ctx)
	// The middle point: when each event reached the bus (a core NATS
	// subscriber sees a stored message as JetStream takes it).
	onBus := make(map[string]time.Time, n)
	sub, err := a.Core().Bus.Conn().Subscribe(cfg.Bus.SubjectPrefix+".>", func(m *nats.Msg) {
		now := time.Now()
		mu.Lock()
		if _, ok := onBus[m.Header.Get("Nats-Msg-Id")]; !ok {
			onBus[m.Header.Get("Nats-Msg-Id")] = now
		}
		mu.Unlock()
	})
	if err != nil {
		return err
	}
	defer sub.Unsubscribe()
	url := "http://" + a.HTTPAddr() + "/webhooks/cakework/build/succeeded?token=e2e-token"
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256, DialContext: (&net.Dialer{}).DialContext}}

	start := time.Now()
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	var wg sync.WaitGroup
	var failed int
	for i := 0; i < n; i++ {
		<-tick.C
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			t0 := time.Now()
			body := fmt.Sprintf(`{"buildId":"e2e-%d-%d","imageId":"img-%d"}`, start.UnixNano(), i, i)
			resp, err := client.Post(url, "application/json", strings.NewReader(body))
			if err != nil {
				mu.Lock()
				failed++
				mu.Unlock()
				return
			}
			var out struct{ ID string }
			_ = json.NewDecoder(resp.Body).Decode(&out)
			resp.Body.Close()
			mu.Lock()
			if resp.StatusCode != http.StatusAccepted {
				failed++
			} else {
				sent[out.ID] = t0
			}
			mu.Unlock()
		}(i)
	}
	wg.Wait()
	sendDur := time.Since(start)
	select {
	case <-done:
	case <-time.After(60 * time.Second):
	}
	total := time.Since(start)
	mu.Lock()
	defer mu.Unlock()
	var lat, toBus, fromBus []time.Duration
	for id, t0 := range sent {
		t2, ok := arrived[id]
		if !ok {
			continue
		}
		lat = append(lat, t2.Sub(t0))
		if t1, ok := onBus[id]; ok {
			toBus = append(toBus, t1.Sub(t0))
			fromBus = append(fromBus, t2.Sub(t1))
		}
	}
	if len(lat) == 0 {
		return fmt.Errorf("nothing delivered (%d failed posts)", failed)
	}
	fmt.Printf("e2e: %d webhooks at %d/s (sent in %s), %d accepted, %d failed posts, %d delivered in %s\n",
		n, rate, sendDur.Round(time.Millisecond), len(sent), failed, len(arrived), total.Round(time.Millisecond))
	fmt.Printf("webhook POST -> callback: %s\n", quantiles(lat))
	fmt.Printf("  POST -> on the bus:     %s\n", quantiles(toBus))
	fmt.Printf("  bus -> callback:        %s\n", quantiles(fromBus))
	return nil
}

func quantiles(d []time.Duration) string {
	if len(d) == 0 {
		return "no samples"
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	q := func(p float64) time.Duration { return d[int(p*float64(len(d)-1))].Round(10 * time.Microsecond) }
	return fmt.Sprintf("p50 %s  p90 %s  p99 %s  max %s", q(0.5), q(0.9), q(0.99), d[len(d)-1].Round(time.Millisecond))
}
