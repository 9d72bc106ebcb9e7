package reliability

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http/httptest"
	"path/filepath"
	"time"
)

// CrashOptions shape a crash matrix run.
type CrashOptions struct {
	RelayBin, Dir string
	// Iterations is how many times the relay is killed with SIGKILL.
	Iterations int
	// The relay is killed at a uniformly random moment between MinUp and
	// MaxUp after it answers /healthz.
	MinUp, MaxUp time.Duration
	// Webhooks are sent at Rate per second (every 10th a Cakework build
	// webhook, the rest generic), each until acknowledged.
	Webhooks int
	Rate     float64
	// VMs log VMs (lines written by the harness every 50ms) and as many
	// churning VMs.
	VMs int
	// FailEvery makes the callback receiver fail every n-th request.
	FailEvery int
	Seed      uint64
	// Settle bounds the wait, after the last restart, for the stream and
	// the callback receiver to hold everything.
	Settle time.Duration
	Logf   func(string, ...any)
}

// CrashResult is what a crash matrix run saw.
type CrashResult struct {
	Iterations                   int
	Webhooks                     int
	Accepted, Duplicate, Refused int64
	StreamMsgs                   int
	Lines                        int
	CallbackRequests, Failed     int
	CallbackEvents, Redelivered  int
	SettleStream, SettleSinks    time.Duration
	Elapsed                      time.Duration
	Problems                     []string
}

// CrashMatrix runs the relay binary against a simulator and a failing
// callback receiver, under webhook load, and kills it with SIGKILL at
// random moments. After the last restart it checks that every acknowledged
// webhook and every log line reached the stream exactly once, in order, and
// that every event reached the callback receiver, first deliveries in
// stream order per resource.
func CrashMatrix(ctx context.Context, o CrashOptions) (*CrashResult, error) {
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	if o.Settle == 0 {
		o.Settle = 90 * time.Second
	}
	start := time.Now()
	rng := rand.New(rand.NewPCG(o.Seed, 99))
	world := NewWorld(o.Seed)
	defer world.Close()
	recv := NewReceiver(o.FailEvery)
	cb := httptest.NewServer(recv)
	defer cb.Close()
	addrs, err := FreeAddrs(2)
	if err != nil {
		return nil, err
	}
	relay, err := NewRelay(o.RelayBin, o.Dir, RelayConfig{
		DataDir: filepath.Join(o.Dir, "data"), HTTPAddr: addrs[0], EmbeddedAddr: addrs[1],
		CakeworkURL: world.API.URL, VMsEvery: "@every 1s", BuildsEvery: "@every 1s", LogsEvery: "@every 1s",
		LogBatch: 50, LogMaxPages: 4,
		CallbackURL: cb.URL, CallbackConc: 4,
	})
	if err != nil {
		return nil, err
	}
	if err := relay.Start(); err != nil {
		return nil, err
	}
	defer func() {
		if relay.P != nil && !relay.P.Exited() {
			_ = relay.P.Term(10 * time.Second)
		}
	}()
	if err := relay.WaitBaseline(ctx, 20*time.Second); err != nil {
		return nil, fmt.Errorf("%w\n%s", err, relay.P.Logs)
	}
	world.AddVMs(o.VMs)
	world.NewHooks(relay.URL(""), o.Webhooks, 10)

	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	var st HookStats
	hooksDone := background(func() {
		world.SendHooks(loadCtx, o.Rate, 16, 300*time.Millisecond, &st, nil)
	})
	logsDone := background(func() {
		Loop(loadCtx, 50*time.Millisecond, world.AppendLogs)
	})
	churnDone := background(func() {
		Loop(loadCtx, 300*time.Millisecond, world.Churn)
	})

	res := &CrashResult{Webhooks: o.Webhooks}
	for i := 0; i < o.Iterations; i++ {
		up := o.MinUp + time.Duration(rng.Int64N(int64(o.MaxUp-o.MinUp)+1))
		if err := CtxSleep(ctx, up); err != nil {
			return nil, err
		}
		if relay.P.Exited() {
			return nil, fmt.Errorf("iteration %d: the relay exited by itself:\n%s", i, relay.P.Logs)
		}
		relay.P.Kill()
		res.Iterations++
		o.Logf("iteration %d: killed after %s; %d webhooks unacknowledged, %d log lines written", i, up, world.Unacked(), world.LineCount())
		// Sometimes come back at once, sometimes after the senders noticed.
		_ = CtxSleep(ctx, time.Duration(rng.IntN(300))*time.Millisecond)
		if err := relay.Start(); err != nil {
			return nil, fmt.Errorf("iteration %d: restart: %w", i, err)
		}
	}
	// Let the senders finish (every webhook acknowledged), then stop the
	// log writers and see everything arrive.
	select {
	case <-hooksDone:
	case <-time.After(o.Settle):
		res.Problems = append(res.Problems, fmt.Sprintf("%d webhooks still unacknowledged %s after the last restart", world.Unacked(), o.Settle))
	}
	stopLoad()
	<-hooksDone
	<-logsDone
	<-churnDone
	res.Accepted, res.Duplicate, res.Refused = st.Accepted.Load(), st.Duplicate.Load(), st.Unavailable.Load()+st.OtherStatus.Load()
	res.Lines = world.LineCount()

	settleStart := time.Now()
	deadline := settleStart.Add(o.Settle)
	msgs, probs := settleStream(ctx, relay.NATSURL(), world, deadline)
	res.SettleStream = time.Since(settleStart)
	res.StreamMsgs = len(msgs)
	res.Problems = append(res.Problems, probs...)

	// Every event on the stream reaches the callback receiver; first
	// deliveries of one resource's events in stream order. The stream is
	// read again each round: the poller may still publish a change it saw
	// just before the load stopped.
	sinkStart := time.Now()
	var missing int
	for {
		if m, err := ReadStream(ctx, relay.NATSURL(), "CAKEWORK"); err == nil {
			msgs = m
		}
		missing = 0
		for _, m := range msgs {
			if recv.Delivered(m.Event.ID) == 0 {
				missing++
			}
		}
		if missing == 0 || time.Now().After(deadline.Add(45*time.Second)) || ctx.Err() != nil {
			break
		}
		_ = CtxSleep(ctx, time.Second)
	}
	res.SettleSinks = time.Since(sinkStart)
	if missing > 0 {
		res.Problems = append(res.Problems, fmt.Sprintf("%d of %d events never reached the callback receiver", missing, len(msgs)))
	}
	bySubject := map[string][]string{}
	for _, m := range msgs {
		bySubject[m.Event.Subject] = append(bySubject[m.Event.Subject], m.Event.ID)
	}
	bad := 0
	for subj, want := range bySubject {
		got := recv.Order(subj)
		if d := diffLines(want, got); d != "" && missing == 0 {
			bad++
			if bad <= 5 {
				res.Problems = append(res.Problems, fmt.Sprintf("callbacks about %s not in stream order (want: stream, got: receiver): %s", subj, d))
			}
		}
	}
	res.CallbackRequests, res.Failed, res.CallbackEvents, res.Redelivered = recv.Stats()
	res.Elapsed = time.Since(start)
	if err := relay.P.Term(10 * time.Second); err != nil {
		res.Problems = append(res.Problems, "final SIGTERM: "+err.Error())
	}
	return res, nil
}

// String summarises a result.
func (r *CrashResult) String() string {
	return fmt.Sprintf("%d SIGKILLs in %s; %d webhooks (202: %d, 200 duplicate: %d, refused: %d), %d log lines, %d stream messages (settled %s); callbacks: %d requests, %d failed on purpose, %d events, %d redeliveries (settled %s); %d problems",
		r.Iterations, r.Elapsed.Round(time.Second), r.Webhooks, r.Accepted, r.Duplicate, r.Refused, r.Lines, r.StreamMsgs, r.SettleStream.Round(100*time.Millisecond),
		r.CallbackRequests, r.Failed, r.CallbackEvents, r.Redelivered, r.SettleSinks.Round(100*time.Millisecond), len(r.Problems))
}
