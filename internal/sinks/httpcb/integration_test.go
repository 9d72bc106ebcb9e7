package httpcb_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/clock"
	"github.com/cakework-relay/cakework-relay/internal/event"
	"github.com/cakework-relay/cakework-relay/internal/httpapi"
	"github.com/cakework-relay/cakework-relay/internal/sinks"
	"github.com/cakework-relay/cakework-relay/internal/sinks/httpcb"
	"github.com/cakework-relay/cakework-relay/internal/sinks/sinktest"
	"github.com/cakework-relay/cakework-relay/internal/state"
)

// relay is the sink half of a relay: a manager with one HTTP sink on a real
// bus and bbolt, and the admin API on a real HTTP server.
type relay struct {
	env   *sinktest.Env
	mgr   *sinks.Manager
	admin string
	logs  *sinktest.Buffer
	http  *httpapi.Server
}

const adminToken = "admin-token"

func startRelay(t *testing.T, env *sinktest.Env, rcv *receiver, clk clock.Clock, mod func(*httpcb.Config)) *relay {
	t.Helper()
	log, buf := sinktest.CaptureLogs()
	c := httpcb.Config{
		Name: "app", URL: rcv.srv.URL + "/hook", Secret: testSecret, Events: []string{"*"},
		Timeout: 5 * time.Second, Concurrency: 4,
		Retry: sinks.RetryConfig{Initial: time.Second, MaxInterval: time.Minute, MaxAttempts: 6},
	}
	if mod != nil {
		mod(&c)
	}
	s, err := httpcb.New(c, httpcb.Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	m := sinks.NewManager(sinks.ManagerOptions{Bus: env.Bus, Store: env.Store, Clock: clk, Logger: log, ReplayWait: 10 * time.Second})
	o := s.SinkOptions()
	o.AckWait = 2 * time.Second
	if _, err := m.Add(s, o); err != nil {
		t.Fatal(err)
	}
	h := httpapi.New(httpapi.Options{Listen: "127.0.0.1:0", AdminToken: adminToken})
	m.Register(h)
	if err := h.Listen(); err != nil {
		t.Fatal(err)
	}
	if err := m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	h.Start()
	r := &relay{env: env, mgr: m, admin: "http://" + h.Addr(), logs: buf, http: h}
	t.Cleanup(func() { r.stop(t) })
	return r
}

func (r *relay) stop(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r.http.Shutdown(ctx)
	if err := r.mgr.Stop(ctx); err != nil {
		t.Error(err)
	}
}

func (r *relay) status(t *testing.T) sinks.Status {
	return r.mgr.Status()["app"]
}

func (r *relay) call(t *testing.T, method, path string, out any) int {
	t.Helper()
	req, _ := http.NewRequest(method, r.admin+path, nil)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatal(err)
		}
	}
	return resp.StatusCode
}

func (r *relay) dlq(t *testing.T) []sinks.DeadLetter {
	t.Helper()
	var l sinks.ListResponse
	if code := r.call(t, http.MethodGet, "/v1/dlq", &l); code != 200 {
		t.Fatalf("GET /v1/dlq: %d", code)
	}
	return l.DeadLetters
}

func TestFirstTry(t *testing.T) {
	env := sinktest.NewEnv(t)
	rcv := newReceiver(t)
	clk := sinktest.NewStepClock(time.Now())
	r := startRelay(t, env, rcv, clk, nil)
	ev := sinktest.Event("build", "b1", "succeeded", 1)
	env.Publish(t, ev)
	sinktest.Eventually(t, 5*time.Second, "delivery", func() bool { return r.status(t).Delivered == 1 })
	got := rcv.acceptedEvents()
	if len(got) != 1 || got[0].ID != ev.ID || rcv.requestCount() != 1 || len(clk.Waits()) != 0 {
		t.Fatalf("accepted %d events in %d requests, waits %v", len(got), rcv.requestCount(), clk.Waits())
	}
	rcv.checkClean()
	if st := r.status(t); st.Failed != 0 || st.LastError != "" || st.Disabled {
		t.Fatalf("status %+v", st)
	}
}

func TestSuccessAfter503s(t *testing.T) {
	env := sinktest.NewEnv(t)
	rcv := newReceiver(t)
	rcv.setScript(func(n int, _ event.Event) answer {
		if n <= 4 {
			return answer{status: http.StatusServiceUnavailable}
		}
		return answer{status: http.StatusAccepted}
	})
	clk := sinktest.NewStepClock(time.Now())
	r := startRelay(t, env, rcv, clk, nil)
	ev := sinktest.Event("build", "b1", "failed", 1)
	env.Publish(t, ev)
	sinktest.Eventually(t, 5*time.Second, "delivery", func() bool { return r.status(t).Delivered == 1 })
	if n := len(rcv.acceptedEvents()); n != 1 || rcv.attemptsOf(ev.ID) != 5 {
		t.Fatalf("accepted %d, attempts %d; want 1 and 5", n, rcv.attemptsOf(ev.ID))
	}
	// Exponential backoff with jitter: each wait in [base/2, base], base
	// doubling from 1s.
	waits := clk.Waits()
	if len(waits) != 4 {
		t.Fatalf("waits %v", waits)
	}
	for i, w := range waits {
		base := time.Second << i
		if w < base/2 || w > base {
			t.Fatalf("wait %d = %s, want within [%s, %s]", i+1, w, base/2, base)
		}
	}
	st := r.status(t)
	if st.Failed != 4 || st.Retried != 4 || !strings.Contains(st.LastError, "503") || st.DeadLettered != 0 {
		t.Fatalf("status %+v", st)
	}
	rcv.checkClean()
	// The attempt record is gone once delivered (cleared just after the
	// ack, which follows the delivered count).
	sinktest.Eventually(t, 5*time.Second, "attempt record cleared", func() bool { return sinkRecords(t, env.Store, "app") == 0 })
}

func TestRetryAfterHonoured(t *testing.T) {
	env := sinktest.NewEnv(t)
	rcv := newReceiver(t)
	date := time.Now().Add(2 * time.Minute).UTC().Format(http.TimeFormat)
	rcv.setScript(func(n int, _ event.Event) answer {
		switch n {
		case 1:
			return answer{status: http.StatusTooManyRequests, header: map[string]string{"Retry-After": "42"}}
		case 2:
			return answer{status: http.StatusServiceUnavailable, header: map[string]string{"Retry-After": date}}
		}
		return answer{}
	})
	clk := sinktest.NewStepClock(time.Now())
	r := startRelay(t, env, rcv, clk, nil)
	env.Publish(t, sinktest.Event("vm", "v1", "started", 1))
	sinktest.Eventually(t, 5*time.Second, "delivery", func() bool { return r.status(t).Delivered == 1 })
	w := clk.Waits()
	if len(w) != 2 || w[0] != 42*time.Second || w[1] < 100*time.Second || w[1] > 2*time.Minute {
		t.Fatalf("waits %v, want [42s ~2m]", w)
	}
}

func TestBadRequestToDLQThenReplay(t *testing.T) {
	env := sinktest.NewEnv(t)
	rcv := newReceiver(t)
	var mu sync.Mutex
	fixed := false
	rcv.setScript(func(int, event.Event) answer {
		mu.Lock()
		defer mu.Unlock()
		if !fixed {
			return answer{status: http.StatusBadRequest}
		}
		return answer{status: http.StatusOK}
	})
	r := startRelay(t, env, rcv, sinktest.NewStepClock(time.Now()), nil)
	ev := sinktest.Event("build", "b7", "failed", 1)
	env.Publish(t, ev)
	sinktest.Eventually(t, 5*time.Second, "dead letter", func() bool { return r.status(t).DeadLettered == 1 })
	if rcv.attemptsOf(ev.ID) != 1 {
		t.Fatalf("a 400 was retried: %d attempts", rcv.attemptsOf(ev.ID))
	}
	dls := r.dlq(t)
	if len(dls) != 1 {
		t.Fatalf("dlq: %+v", dls)
	}
	d := dls[0]
	if d.Sink != "app" || d.EventID != ev.ID || d.Type != ev.Type || d.Subject != "b7" || d.Attempts != 1 ||
		!strings.Contains(d.Error, "400") || d.NATSSubject != "cakework.build.b7.failed" || d.Time.IsZero() {
		t.Fatalf("dead letter %+v", d)
	}
	// The original is acked: nothing pending on the consumer.
	cons, _ := env.Bus.JetStream().Consumer(context.Background(), "CAKEWORK", sinks.DurableName("app"))
	info, _ := cons.Info(context.Background())
	if info.NumAckPending != 0 || info.NumPending != 0 {
		t.Fatalf("consumer still holds messages: %+v", info)
	}
	// Unknown id, bad id.
	if code := r.call(t, http.MethodPost, "/v1/dlq/999/replay", nil); code != http.StatusNotFound {
		t.Fatalf("unknown id: %d", code)
	}
	if code := r.call(t, http.MethodPost, "/v1/dlq/abc/replay", nil); code != http.StatusBadRequest {
		t.Fatalf("bad id: %d", code)
	}
	// Still broken: the replay fails again and goes back, under a new id.
	var res sinks.ReplayResult
	if code := r.call(t, http.MethodPost, fmt.Sprintf("/v1/dlq/%d/replay", d.ID), &res); code != 200 || res.Outcome != sinks.ReplayDeadLettered || res.NewID == 0 {
		t.Fatalf("replay while broken: %d %+v", code, res)
	}
	dls = r.dlq(t)
	if len(dls) != 1 || dls[0].ID != res.NewID || dls[0].ReplayOf != d.ID || dls[0].EventID != ev.ID {
		t.Fatalf("after failed replay: %+v", dls)
	}
	// Fixed: the replay delivers and removes it.
	mu.Lock()
	fixed = true
	mu.Unlock()
	if code := r.call(t, http.MethodPost, fmt.Sprintf("/v1/dlq/%d/replay", res.NewID), &res); code != 200 || res.Outcome != sinks.ReplayDelivered {
		t.Fatalf("replay: %d %+v", code, res)
	}
	if got := rcv.acceptedEvents(); len(got) != 1 || got[0].ID != ev.ID {
		t.Fatalf("receiver got %v", got)
	}
	if dls := r.dlq(t); len(dls) != 0 {
		t.Fatalf("dlq not empty after replay: %+v", dls)
	}
	rcv.checkClean()
}

func TestGoneDisablesEndpoint(t *testing.T) {
	env := sinktest.NewEnv(t)
	rcv := newReceiver(t)
	rcv.setScript(func(int, event.Event) answer { return answer{status: http.StatusGone} })
	r := startRelay(t, env, rcv, sinktest.NewStepClock(time.Now()), func(c *httpcb.Config) { c.Concurrency = 1 })
	for i := range 3 {
		env.Publish(t, sinktest.Event("build", "b1", []string{"created", "failed", "stuck"}[i], i))
	}
	sinktest.Eventually(t, 5*time.Second, "3 dead letters", func() bool { return r.status(t).DeadLettered == 3 })
	if n := rcv.requestCount(); n != 1 {
		t.Fatalf("the endpoint got %d requests after answering 410, want 1", n)
	}
	st := r.status(t)
	if !st.Disabled || !strings.Contains(st.DisabledReason, "410") {
		t.Fatalf("status %+v", st)
	}
	dls := r.dlq(t)
	if len(dls) != 3 || !strings.Contains(dls[0].Error, "410") || !strings.Contains(dls[2].Error, "disabled") {
		t.Fatalf("dlq %+v", dls)
	}
	if !strings.Contains(r.logs.String(), "level=ERROR") || !strings.Contains(r.logs.String(), "DISABLED") {
		t.Fatalf("no loud log:\n%s", r.logs.String())
	}
	// Replaying to a disabled sink is refused; the entry stays.
	if code := r.call(t, http.MethodPost, fmt.Sprintf("/v1/dlq/%d/replay", dls[0].ID), nil); code != http.StatusConflict {
		t.Fatalf("replay to disabled sink: %d", code)
	}
	// GET /v1/status shows it.
	var status struct{ Sinks map[string]sinks.Status }
	r.call(t, http.MethodGet, "/v1/status", &status)
	if !status.Sinks["app"].Disabled {
		t.Fatalf("status: %+v", status)
	}
}

func TestOrderPerResourceUnderConcurrency(t *testing.T) {
	env := sinktest.NewEnv(t)
	rcv := newReceiver(t)
	var mu sync.Mutex
	rng := rand.New(rand.NewPCG(1, 2))
	rcv.setScript(func(int, event.Event) answer {
		mu.Lock()
		defer mu.Unlock()
		a := answer{delay: time.Duration(rng.IntN(3000)) * time.Microsecond}
		if rng.IntN(5) == 0 {
			a.status = http.StatusServiceUnavailable
		}
		return a
	})
	r := startRelay(t, env, rcv, sinktest.NewStepClock(time.Now()), func(c *httpcb.Config) {
		c.Concurrency = 8
		c.Retry.MaxAttempts = 50
	})
	const resources, perResource = 24, 12
	for i := range perResource {
		for res := range resources {
			kind := []string{"build", "vm"}[res%2]
			env.Publish(t, sinktest.Event(kind, fmt.Sprintf("r%d", res), "log", i))
		}
	}
	total := resources * perResource
	sinktest.Eventually(t, 30*time.Second, "all deliveries", func() bool { return r.status(t).Delivered == uint64(total) })
	got := rcv.acceptedEvents()
	if len(got) != total {
		t.Fatalf("accepted %d, want %d (each exactly once)", len(got), total)
	}
	next := map[string]int{}
	for _, e := range got {
		if n := sinktest.Payload(e); n != next[e.OrderKey()] {
			t.Fatalf("%s: got event %d, want %d: out of order", e.OrderKey(), n, next[e.OrderKey()])
		}
		next[e.OrderKey()]++
	}
	if m := rcv.maxInFlight.Load(); m < 2 || m > 8 {
		t.Fatalf("max parallel requests %d, want 2..8", m)
	}
	if r.status(t).Retried == 0 {
		t.Fatal("no 503 was retried; the test did not exercise retries")
	}
	rcv.checkClean()
}

// TestRestartMidRetry: the relay stops while an event waits for its next
// attempt; events published while it is down wait too. After a restart on
// the same files, both are delivered, in order, and the attempt count
// continues.
func TestRestartMidRetry(t *testing.T) {
	env := sinktest.NewEnv(t)
	rcv := newReceiver(t)
	up := failUntilUp(rcv, http.StatusBadGateway)
	clk := clock.NewFake(time.Now())
	r := startRelay(t, env, rcv, clk, func(c *httpcb.Config) { c.Retry.MaxAttempts = 4 })
	first := sinktest.Event("build", "b1", "created", 0)
	env.Publish(t, first)
	for attempt := 1; attempt <= 2; attempt++ {
		sinktest.Eventually(t, 5*time.Second, "backoff wait", func() bool { return clk.Waiters() > 0 })
		if attempt == 2 {
			break
		}
		clk.Advance(time.Hour)
	}
	if n := rcv.attemptsOf(first.ID); n != 2 {
		t.Fatalf("%d attempts before restart, want 2", n)
	}
	r.stop(t)
	env.Restart(t)
	second := sinktest.Event("build", "b1", "succeeded", 1)
	env.Publish(t, second) // while no sink runs

	up()
	clk2 := clock.NewFake(time.Now())
	r2 := startRelay(t, env, rcv, clk2, func(c *httpcb.Config) { c.Retry.MaxAttempts = 4 })
	sinktest.Eventually(t, 10*time.Second, "both delivered", func() bool { return r2.status(t).Delivered == 2 })
	got := rcv.acceptedEvents()
	if len(got) != 2 || got[0].ID != first.ID || got[1].ID != second.ID {
		t.Fatalf("accepted %v", got)
	}
	if n := rcv.attemptsOf(first.ID); n != 3 {
		t.Fatalf("first event: %d attempts in all, want 3", n)
	}
	sinktest.Eventually(t, 5*time.Second, "attempt records cleared", func() bool { return sinkRecords(t, env.Store, "app") == 0 })
}

// TestRestartContinuesAttemptCount: attempts made before a restart count
// toward max_attempts after it.
func TestRestartContinuesAttemptCount(t *testing.T) {
	env := sinktest.NewEnv(t)
	rcv := newReceiver(t)
	rcv.setScript(func(int, event.Event) answer { return answer{status: http.StatusServiceUnavailable} })
	clk := clock.NewFake(time.Now())
	mod := func(c *httpcb.Config) { c.Retry.MaxAttempts = 3 }
	r := startRelay(t, env, rcv, clk, mod)
	ev := sinktest.Event("vm", "v9", "stopped", 0)
	env.Publish(t, ev)
	sinktest.Eventually(t, 5*time.Second, "first wait", func() bool { return clk.Waiters() > 0 })
	clk.Advance(time.Hour)
	sinktest.Eventually(t, 5*time.Second, "second attempt", func() bool { return rcv.attemptsOf(ev.ID) == 2 && clk.Waiters() > 0 })
	r.stop(t)
	env.Restart(t)
	r2 := startRelay(t, env, rcv, sinktest.NewStepClock(time.Now()), mod)
	sinktest.Eventually(t, 5*time.Second, "dead letter", func() bool { return r2.status(t).DeadLettered == 1 })
	if n := rcv.attemptsOf(ev.ID); n != 3 {
		t.Fatalf("%d attempts in all, want max_attempts 3", n)
	}
	if dls := r2.dlq(t); len(dls) != 1 || dls[0].Attempts != 3 || !strings.Contains(dls[0].Error, "after 3 attempts") {
		t.Fatalf("dlq %+v", dls)
	}
}

// failUntilUp makes rcv answer status until up is called, then accept.
func failUntilUp(rcv *receiver, status int) (up func()) {
	var ok atomic.Bool
	rcv.setScript(func(int, event.Event) answer {
		if ok.Load() {
			return answer{}
		}
		return answer{status: status}
	})
	return func() { ok.Store(true) }
}

func sinkRecords(t *testing.T, s *state.Store, sink string) int {
	n := 0
	if err := s.View(func(tx *state.Tx) error {
		return tx.ForEachSink(sink, func(k string, _ []byte) error {
			if strings.HasPrefix(k, "attempts/") { // not the kept ack floor
				n++
			}
			return nil
		})
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestCrashMidRetry: the process dies while an event waits for a retry (no
// stop, no nak). After the restart the event comes back after AckWait, and
// an event published meanwhile about the same build waits for it.
func TestCrashMidRetry(t *testing.T) {
	env := sinktest.NewEnv(t)
	rcv := newReceiver(t)
	up := failUntilUp(rcv, http.StatusServiceUnavailable)
	clk := clock.NewFake(time.Now())
	startRelay(t, env, rcv, clk, nil) // never stopped cleanly: it dies with its bus
	first := sinktest.Event("build", "b1", "created", 0)
	env.Publish(t, first)
	sinktest.Eventually(t, 5*time.Second, "backoff wait", func() bool { return clk.Waiters() > 0 })
	env.Restart(t) // the bus and bbolt go away under the running sink
	second := sinktest.Event("build", "b1", "succeeded", 1)
	env.Publish(t, second)
	up()
	start := time.Now()
	r2 := startRelay(t, env, rcv, sinktest.NewStepClock(time.Now()), nil)
	sinktest.Eventually(t, 15*time.Second, "both delivered", func() bool { return r2.status(t).Delivered == 2 })
	got := rcv.acceptedEvents()
	if len(got) != 2 || got[0].ID != first.ID || got[1].ID != second.ID {
		t.Fatalf("accepted %v", got)
	}
	t.Logf("redelivered after %s (AckWait 2s)", time.Since(start).Round(time.Millisecond))
}
