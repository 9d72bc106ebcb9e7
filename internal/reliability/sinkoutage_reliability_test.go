package reliability

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/clock"
	"github.com/cakework-relay/cakework-relay/internal/sinks"
	"github.com/cakework-relay/cakework-relay/internal/sinks/httpcb"
	"github.com/cakework-relay/cakework-relay/internal/sinks/sinktest"
)

// TestCallbackOutageFiveMinutes: a callback endpoint is down for five
// minutes of (fake) time while a backlog builds up, then comes back. With
// the default retry policy (1s doubling to 10m, 12 attempts) every event is
// delivered, none goes to the DLQ, each resource's events arrive in order,
// and the backlog waits in JetStream: the runner holds at most
// MaxAckPending messages whatever the backlog's size.
func TestCallbackOutageFiveMinutes(t *testing.T) {
	const (
		events    = 20000
		resources = 500
		outage    = 5 * time.Minute
	)
	env := sinktest.NewEnv(t)
	t0 := time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)
	clk := clock.NewFake(t0)
	upAt := t0.Add(outage)

	var mu sync.Mutex
	requests := map[string]int{}  // event id -> requests
	okOrder := map[string][]int{} // resource -> data.n of first deliveries
	delivered := map[string]bool{}
	var failedRequests int
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		id := r.Header.Get("webhook-id")
		mu.Lock()
		defer mu.Unlock()
		requests[id]++
		if clk.Now().Before(upAt) {
			failedRequests++
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		if !delivered[id] {
			var ev struct {
				Subject string
				Data    struct{ N int }
			}
			_ = json.Unmarshal(body, &ev)
			okOrder[ev.Subject] = append(okOrder[ev.Subject], ev.Data.N)
			delivered[id] = true
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()

	cfg := httpcb.Config{Name: "app", URL: srv.URL, Secret: CallbackSecret, Events: []string{"*"}, Concurrency: 4,
		Retry: sinks.RetryConfig{Initial: time.Second, MaxInterval: 10 * time.Minute, MaxAttempts: 12}}
	snd, err := httpcb.New(cfg, httpcb.Options{})
	if err != nil {
		t.Fatal(err)
	}
	so := snd.SinkOptions()
	so.Bus, so.Store, so.Clock, so.DeliverAll = env.Bus, env.Store, clk, true
	runner, err := sinks.NewRunner(snd, so)
	if err != nil {
		t.Fatal(err)
	}
	heap := func() float64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return float64(ms.HeapInuse) / (1 << 20)
	}
	h0 := heap()
	if err := runner.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer runner.Stop(context.Background())

	// The backlog builds up while the endpoint is down.
	for i := 0; i < events; i++ {
		env.Publish(t, sinktest.Event("vm", fmt.Sprintf("vm-%03d", i%resources), "log", i))
	}
	// Halfway through the outage: how much does the runner hold?
	for clk.Now().Before(t0.Add(outage / 2)) {
		clk.Advance(time.Second)
		time.Sleep(2 * time.Millisecond)
	}
	h1 := heap()
	cons, err := env.Bus.JetStream().Consumer(context.Background(), "CAKEWORK", sinks.DurableName("app"))
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("mid-outage: %d events waiting in JetStream, %d held by the runner (max_ack_pending %d); heap %.1f MB before start, %.1f MB now",
		info.NumPending, info.NumAckPending, info.Config.MaxAckPending, h0, h1)
	if info.NumAckPending > info.Config.MaxAckPending || info.NumPending < uint64(events-info.Config.MaxAckPending-10) {
		t.Errorf("the backlog is not waiting in JetStream: pending %d, held %d", info.NumPending, info.NumAckPending)
	}
	if h1-h0 > 64 {
		t.Errorf("heap grew %.1f MB during the outage", h1-h0)
	}

	// The endpoint comes back; keep time moving until everything is in.
	deadline := time.Now().Add(90 * time.Second)
	for {
		mu.Lock()
		n := len(delivered)
		mu.Unlock()
		if n == events {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d events delivered; status %+v", n, events, runner.Status())
		}
		clk.Advance(time.Second)
		time.Sleep(2 * time.Millisecond)
	}
	h2 := heap()

	dlq, err := env.Bus.JetStream().Stream(context.Background(), env.Bus.DLQStream())
	if err != nil {
		t.Fatal(err)
	}
	dinfo, err := dlq.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if dinfo.State.Msgs != 0 {
		t.Errorf("%d events went to the DLQ before max_attempts", dinfo.State.Msgs)
	}
	mu.Lock()
	defer mu.Unlock()
	maxReq := 0
	for _, n := range requests {
		maxReq = max(maxReq, n)
	}
	if maxReq >= cfg.Retry.MaxAttempts {
		t.Errorf("an event took %d requests; max_attempts is %d", maxReq, cfg.Retry.MaxAttempts)
	}
	for res, ns := range okOrder {
		for i := 1; i < len(ns); i++ {
			if ns[i] < ns[i-1] {
				t.Errorf("%s: event %d delivered after %d", res, ns[i], ns[i-1])
				break
			}
		}
	}
	st := runner.Status()
	t.Logf("outage of %s (fake time; %s in all): %d events delivered, %d requests refused while down, most requests for one event %d (max_attempts %d), DLQ %d; heap after delivery %.1f MB; status %+v",
		outage, clk.Now().Sub(t0).Round(time.Second), len(delivered), failedRequests, maxReq, cfg.Retry.MaxAttempts, dinfo.State.Msgs, h2, st)
}
