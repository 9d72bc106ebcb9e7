package reliability

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// OutageOptions shape an external NATS outage run.
type OutageOptions struct {
	RelayBin, NATSBin, Dir string
	// Before, Outage and After are the phases: the server is up, killed
	// with SIGKILL, then restarted on the same store.
	Before, Outage, After time.Duration
	// Rate is webhooks per second, sent throughout, each until
	// acknowledged.
	Rate float64
	// OutboxLimit is ingest.outbox_limit; Rate*Outage should exceed it.
	OutboxLimit int
	VMs         int
	Settle      time.Duration
	Logf        func(string, ...any)
}

// Phase is what was seen in one phase.
type Phase struct {
	Name                  string
	Accepted, Unavailable int
	NoRetryAfter          int
	ReadyOK, ReadyNot     int
	FirstNotReady         time.Duration // after the phase began; -1 never
	FirstReady            time.Duration
	First503              time.Duration
	ReadyReasons          map[string]int
	MaxOutboxDepth        float64
}

// OutageResult is what an outage run saw.
type OutageResult struct {
	Phases        []*Phase
	Webhooks      int
	Lines         int
	StreamMsgs    int
	DrainAfterUp  time.Duration // from the restart until the outbox was empty
	Problems      []string
	Elapsed       time.Duration
	RetryAfterSet map[string]int
}

// NATSOutage runs the relay against an external nats-server, kills the
// server for o.Outage under webhook and poller load, restarts it, and
// checks readiness per phase, ingest's answers (202 until the outbox bound,
// then 503 with Retry-After), and that everything reached the stream once
// and in order.
func NATSOutage(ctx context.Context, o OutageOptions) (*OutageResult, error) {
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	if o.Settle == 0 {
		o.Settle = 60 * time.Second
	}
	start := time.Now()
	addrs, err := FreeAddrs(2)
	if err != nil {
		return nil, err
	}
	ns := &NATSServer{Bin: o.NATSBin, Dir: filepath.Join(o.Dir, "nats"), Addr: addrs[1]}
	if err := ns.Start(); err != nil {
		return nil, err
	}
	defer ns.Kill()
	world := NewWorld(11)
	defer world.Close()
	relay, err := NewRelay(o.RelayBin, o.Dir, RelayConfig{
		DataDir: filepath.Join(o.Dir, "data"), HTTPAddr: addrs[0], BusURL: ns.URL(),
		CakeworkURL: world.API.URL, VMsEvery: "@every 1s", BuildsEvery: "@every 1s", LogsEvery: "@every 1s",
		LogBatch: 100, LogMaxPages: 4, OutboxLimit: o.OutboxLimit, LogLevel: "info",
	})
	if err != nil {
		return nil, err
	}
	if err := relay.Start(); err != nil {
		return nil, err
	}
	defer func() {
		if !relay.P.Exited() {
			_ = relay.P.Term(10 * time.Second)
		}
	}()
	if err := WaitHTTP(relay.URL("/readyz"), 200, 20*time.Second, relay.P.Done()); err != nil {
		return nil, fmt.Errorf("%w\n%s", err, relay.P.Logs)
	}
	if err := relay.WaitBaseline(ctx, 20*time.Second); err != nil {
		return nil, fmt.Errorf("%w\n%s", err, relay.P.Logs)
	}
	world.AddVMs(o.VMs)
	total := int(o.Rate * (o.Before + o.Outage + o.After).Seconds())
	world.NewHooks(relay.URL(""), total, 10)

	res := &OutageResult{Webhooks: total, RetryAfterSet: map[string]int{}}
	var mu sync.Mutex
	var cur *Phase
	var phaseStart time.Time
	newPhase := func(name string) {
		mu.Lock()
		defer mu.Unlock()
		cur = &Phase{Name: name, FirstNotReady: -1, FirstReady: -1, First503: -1, ReadyReasons: map[string]int{}}
		phaseStart = time.Now()
		res.Phases = append(res.Phases, cur)
		o.Logf("phase %s", name)
	}
	newPhase("before")

	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	var st HookStats
	hooksDone := background(func() {
		world.SendHooks(loadCtx, o.Rate, 32, 2*time.Second, &st, func(a Answer, err error) {
			if err != nil {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			switch a.Status {
			case http.StatusAccepted, http.StatusOK:
				cur.Accepted++
			case http.StatusServiceUnavailable:
				cur.Unavailable++
				if cur.First503 < 0 {
					cur.First503 = time.Since(phaseStart)
				}
				res.RetryAfterSet[a.RetryAfter]++
				if a.RetryAfter == "" {
					cur.NoRetryAfter++
				}
			}
		})
	})
	bg := &sync.WaitGroup{}
	bg.Add(3)
	go func() { defer bg.Done(); Loop(loadCtx, 50*time.Millisecond, world.AppendLogs) }()
	go func() { defer bg.Done(); Loop(loadCtx, 250*time.Millisecond, world.Churn) }()
	// Watch /readyz and the outbox depth.
	go func() {
		defer bg.Done()
		Loop(loadCtx, 200*time.Millisecond, func() {
			code, body, err := relay.Ready()
			m, _ := relay.Metrics(loadCtx, "relay_outbox_depth")
			mu.Lock()
			defer mu.Unlock()
			cur.MaxOutboxDepth = max(cur.MaxOutboxDepth, m["relay_outbox_depth"])
			if err != nil {
				return
			}
			if code == 200 {
				cur.ReadyOK++
				if cur.FirstReady < 0 {
					cur.FirstReady = time.Since(phaseStart)
				}
			} else {
				cur.ReadyNot++
				if cur.FirstNotReady < 0 {
					cur.FirstNotReady = time.Since(phaseStart)
				}
				cur.ReadyReasons[reason(body)]++
			}
		})
	}()

	if err := CtxSleep(ctx, o.Before); err != nil {
		return nil, err
	}
	newPhase("outage")
	ns.Kill()
	if err := CtxSleep(ctx, o.Outage); err != nil {
		return nil, err
	}
	newPhase("after")
	upAt := time.Now()
	if err := ns.Start(); err != nil {
		return nil, err
	}
	// The outbox drains: depth 0 again.
	drained := false
	for time.Since(upAt) < o.Settle {
		m, err := relay.Metrics(ctx, "relay_outbox_depth")
		if err == nil && m["relay_outbox_depth"] == 0 && time.Since(upAt) > time.Second {
			res.DrainAfterUp = time.Since(upAt)
			drained = true
			break
		}
		_ = CtxSleep(ctx, 100*time.Millisecond)
	}
	if !drained {
		res.Problems = append(res.Problems, fmt.Sprintf("outbox not empty %s after the server came back", o.Settle))
	}
	if rest := o.After - time.Since(upAt); rest > 0 {
		_ = CtxSleep(ctx, rest)
	}
	select {
	case <-hooksDone:
	case <-time.After(o.Settle):
		res.Problems = append(res.Problems, fmt.Sprintf("%d webhooks still unacknowledged", world.Unacked()))
	}
	stopLoad()
	<-hooksDone
	bg.Wait()
	res.Lines = world.LineCount()

	// Phase checks.
	byName := map[string]*Phase{}
	for _, p := range res.Phases {
		byName[p.Name] = p
	}
	prob := func(f string, a ...any) { res.Problems = append(res.Problems, fmt.Sprintf(f, a...)) }
	if p := byName["before"]; p.ReadyNot > 0 || p.Unavailable > 0 {
		prob("before the outage: %d not-ready answers, %d 503s", p.ReadyNot, p.Unavailable)
	}
	out := byName["outage"]
	if out.FirstNotReady < 0 || out.FirstNotReady > 5*time.Second {
		prob("during the outage /readyz said not ready only after %s (-1: never)", out.FirstNotReady)
	}
	if out.ReadyOK > 2 {
		prob("during the outage /readyz answered 200 %d times", out.ReadyOK)
	}
	if out.Accepted == 0 {
		prob("during the outage ingest accepted nothing; it should answer 202 from the outbox until the bound")
	}
	if float64(o.OutboxLimit) < o.Rate*o.Outage.Seconds()*0.8 && out.Unavailable == 0 {
		prob("the outbox bound (%d) was never hit: no 503 during the outage", o.OutboxLimit)
	}
	for _, p := range res.Phases {
		if p.NoRetryAfter > 0 {
			prob("phase %s: %d 503 answers without Retry-After", p.Name, p.NoRetryAfter)
		}
	}
	if out.MaxOutboxDepth > float64(o.OutboxLimit)*1.2+1000 {
		prob("outbox depth reached %.0f, well over its bound %d", out.MaxOutboxDepth, o.OutboxLimit)
	}
	if a := byName["after"]; a.FirstReady < 0 {
		prob("after the server came back /readyz never answered 200")
	}

	// Everything on the stream once, in order.
	deadline := time.Now().Add(o.Settle)
	msgs, probs := settleStream(ctx, relay.NATSURL(), world, deadline)
	res.StreamMsgs = len(msgs)
	res.Problems = append(res.Problems, probs...)
	res.Elapsed = time.Since(start)
	if err := relay.P.Term(10 * time.Second); err != nil {
		prob("final SIGTERM: %v", err)
	}
	if len(res.Problems) > 0 {
		res.Problems = append(res.Problems, "relay log tail:\n"+tail(relay.P.Logs.String(), 3000))
	}
	return res, nil
}

func reason(body string) string {
	if i := strings.Index(body, "bus"); i >= 0 {
		return "bus: " + strings.TrimSpace(tail(body[i:], 120))
	}
	return tail(body, 120)
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[len(s)-n:]
}

func since(d time.Duration) string {
	if d < 0 {
		return "never"
	}
	return "after " + d.Round(10*time.Millisecond).String()
}

// String summarises a result.
func (r *OutageResult) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d webhooks, %d log lines, %d stream messages, outbox drained %s after the restart, %s in all, Retry-After values %v, %d problems\n",
		r.Webhooks, r.Lines, r.StreamMsgs, r.DrainAfterUp.Round(10*time.Millisecond), r.Elapsed.Round(time.Second), r.RetryAfterSet, len(r.Problems))
	for _, p := range r.Phases {
		fmt.Fprintf(&b, "  %-7s 202/200: %d, 503: %d (first %s), readyz 200: %d (first %s), not ready: %d (first %s), max outbox depth %.0f, reasons %v\n",
			p.Name, p.Accepted, p.Unavailable, since(p.First503), p.ReadyOK, since(p.FirstReady),
			p.ReadyNot, since(p.FirstNotReady), p.MaxOutboxDepth, p.ReadyReasons)
	}
	return b.String()
}
