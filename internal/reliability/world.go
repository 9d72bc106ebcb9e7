package reliability

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/cakework"
	"github.com/cakework-relay/cakework-relay/internal/cakework/cakeworksim"
)

// World is the outside of a relay under test: a Cakework simulator whose
// log lines the harness writes itself (so it knows exactly what every
// stream holds), VMs that change state, and webhook senders that owe every
// webhook until the relay acknowledges it.
type World struct {
	Sim *cakeworksim.Sim
	API *httptest.Server

	mu       sync.Mutex
	rng      *rand.Rand
	vmLines  map[string][]string // vm id -> messages appended, in order
	bLines   map[string][]string // build id -> messages
	logVMs   []string
	churnVMs []string
	seq      int

	// Webhooks.
	hooks   []*hook
	byEvent map[string]*hook
}

type hook struct {
	n       int
	url     string
	msgID   string
	body    []byte
	eventID string
	build   string
	acked   atomic.Bool
}

// NewWorld starts the simulator.
func NewWorld(seed uint64) *World {
	w := &World{
		Sim:     cakeworksim.New(cakeworksim.Options{APIKey: APIKey, VMLogEvery: 1000 * time.Hour, LogBatchMin: 1, Seed: seed}),
		rng:     rand.New(rand.NewPCG(seed, seed+1)),
		vmLines: map[string][]string{},
		bLines:  map[string][]string{},
		byEvent: map[string]*hook{},
	}
	w.API = httptest.NewServer(w.Sim.Handler())
	return w
}

// Close stops the simulator's server.
func (w *World) Close() { w.API.Close() }

// AddVMs adds n quiet VMs whose lines the harness writes (AppendLogs), and
// n more that change state (Churn). Call it after the relay's baseline, so
// their logs are tailed from the first line.
func (w *World) AddVMs(n int) {
	for i := 0; i < n; i++ {
		port := 8080
		v := w.Sim.AddVM(cakework.VM{ID: fmt.Sprintf("logvm-%03d", i), Port: &port})
		w.Sim.SetVMQuiet(v.ID, true)
		c := w.Sim.AddVM(cakework.VM{ID: fmt.Sprintf("churnvm-%03d", i), Port: &port})
		w.Sim.SetVMQuiet(c.ID, true)
		w.mu.Lock()
		w.logVMs = append(w.logVMs, v.ID)
		w.churnVMs = append(w.churnVMs, c.ID)
		w.mu.Unlock()
	}
}

// AppendLogs writes one to three lines to every log VM; now and then two
// identical lines in one millisecond (they must both survive).
func (w *World) AppendLogs() {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := time.Now()
	for _, id := range w.logVMs {
		k := 1 + w.rng.IntN(3)
		var lines []cakework.LogLine
		for range k {
			w.seq++
			msg := fmt.Sprintf("%s line %d", id, w.seq)
			lines = append(lines, cakework.LogLine{Timestamp: now.UnixMilli(), Level: "info", Message: msg})
		}
		if w.rng.IntN(10) == 0 {
			lines = append(lines,
				cakework.LogLine{Timestamp: now.UnixMilli(), Level: "info", Message: "same line twice"},
				cakework.LogLine{Timestamp: now.UnixMilli(), Level: "info", Message: "same line twice"})
		}
		for _, l := range lines {
			w.vmLines[id] = append(w.vmLines[id], l.Message)
		}
		w.Sim.AppendVMLogs(id, lines...)
	}
}

// Churn flips one churn VM between started and stopped.
func (w *World) Churn() {
	w.mu.Lock()
	if len(w.churnVMs) == 0 {
		w.mu.Unlock()
		return
	}
	id := w.churnVMs[w.rng.IntN(len(w.churnVMs))]
	w.mu.Unlock()
	v, ok := w.Sim.VM(id)
	if !ok {
		return
	}
	if v.State == cakework.VMStarted {
		w.Sim.SetVMState(id, cakework.VMStopped)
	} else {
		w.Sim.SetVMState(id, cakework.VMStarted)
	}
}

// background runs f in a goroutine and returns a channel closed when f
// returns.
func background(f func()) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	return done
}

// Loop calls f every d until ctx ends.
func Loop(ctx context.Context, d time.Duration, f func()) {
	for CtxSleep(ctx, d) == nil {
		f()
	}
}

// NewHooks prepares n webhooks to relayURL (the relay's base URL): mostly
// generic ones, and every buildEvery-th a Cakework build webhook for a
// build that exists (finished, with log lines) in the simulator.
func (w *World) NewHooks(relayURL string, n, buildEvery int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	base := len(w.hooks)
	for i := base; i < base+n; i++ {
		h := &hook{n: i}
		if buildEvery > 0 && i%buildEvery == 0 {
			id := fmt.Sprintf("build-%06d", i)
			w.Sim.CreateBuild(cakeworksim.BuildSpec{ID: id, Manual: true})
			var lines []cakework.LogLine
			t0 := time.Now().Add(-time.Second)
			for j := range 5 + i%7 {
				msg := fmt.Sprintf("%s step %d", id, j)
				lines = append(lines, cakework.LogLine{Timestamp: t0.Add(time.Duration(j) * time.Millisecond).UnixMilli(), Level: "info", Message: msg})
				w.bLines[id] = append(w.bLines[id], msg)
			}
			w.Sim.AppendBuildLogs(id, lines...)
			w.Sim.SetBuildStatus(id, cakework.BuildSucceeded, "")
			b, _ := w.Sim.Build(id)
			h.url = relayURL + "/webhooks/cakework"
			h.msgID = "msg_" + id
			h.body = fmt.Appendf(nil, `{"buildId":%q,"imageId":%q}`, id, b.ImageID)
			h.eventID = IDs.BuildStatusID(id, cakework.BuildSucceeded)
			h.build = id
		} else {
			h.url = relayURL + "/webhooks/" + GenericReceiver
			h.msgID = fmt.Sprintf("msg_g_%06d", i)
			h.body = fmt.Appendf(nil, `{"n":%d,"service":"api"}`, i)
			h.eventID = GenericEventID(h.msgID, h.body)
		}
		w.hooks = append(w.hooks, h)
		w.byEvent[h.eventID] = h
	}
}

// HookStats counts answers.
type HookStats struct {
	Accepted, Duplicate, Unavailable, OtherStatus, ConnErrors atomic.Int64
	// NoRetryAfter counts 503s without a Retry-After header.
	NoRetryAfter atomic.Int64
}

// SendHooks sends the prepared webhooks in order at about rate per second
// (0: as fast as workers go), each until acknowledged: a 503 is retried
// after its Retry-After (capped at retryCap), a connection error after
// 100ms. It returns when every webhook is acknowledged or ctx ends.
// onAnswer, if set, sees every answer.
func (w *World) SendHooks(ctx context.Context, rate float64, workers int, retryCap time.Duration, st *HookStats, onAnswer func(Answer, error)) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w.mu.Lock()
	hooks := append([]*hook(nil), w.hooks...)
	w.mu.Unlock()
	snd := NewSender(workers)
	jobs := make(chan *hook, len(hooks))
	retry := make(chan *hook, len(hooks))
	var pending sync.WaitGroup
	pending.Add(len(hooks))
	go func() {
		start := time.Now()
		for i, h := range hooks {
			if rate > 0 {
				due := start.Add(time.Duration(float64(i) / rate * float64(time.Second)))
				if d := time.Until(due); d > 0 && CtxSleep(ctx, d) != nil {
					return
				}
			}
			if h.acked.Load() {
				pending.Done()
				continue
			}
			jobs <- h
		}
	}()
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				var h *hook
				select {
				case <-ctx.Done():
					return
				case h = <-retry:
				case h = <-jobs:
				}
				a, err := snd.Post(ctx, h.url, h.msgID, h.body)
				if onAnswer != nil {
					onAnswer(a, err)
				}
				var wait time.Duration
				switch {
				case err != nil:
					st.ConnErrors.Add(1)
					wait = 100 * time.Millisecond
				case a.Status == http.StatusAccepted || a.Status == http.StatusOK:
					if a.Status == http.StatusOK {
						st.Duplicate.Add(1)
					} else {
						st.Accepted.Add(1)
					}
					if !h.acked.Swap(true) {
						pending.Done()
					}
					continue
				case a.Status == http.StatusServiceUnavailable:
					st.Unavailable.Add(1)
					wait = time.Second
					if a.RetryAfter == "" {
						st.NoRetryAfter.Add(1)
					} else if s, err := time.ParseDuration(a.RetryAfter + "s"); err == nil {
						wait = s
					}
				default:
					st.OtherStatus.Add(1)
					wait = 200 * time.Millisecond
				}
				time.AfterFunc(min(wait, retryCap), func() { retry <- h })
			}
		}()
	}
	done := make(chan struct{})
	go func() { pending.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
	cancel()
	wg.Wait()
	snd.HC.CloseIdleConnections()
}

// Unacked counts webhooks not acknowledged yet.
func (w *World) Unacked() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, h := range w.hooks {
		if !h.acked.Load() {
			n++
		}
	}
	return n
}

// Check compares what reached the stream with what the world produced:
// every acknowledged webhook exactly once, no event id twice, every log
// line of every stream exactly once and in order, VM state events of one VM
// in time order. It returns the problems found (at most a few per kind).
func (w *World) Check(msgs []StreamMsg) []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var probs []string
	add := func(f string, a ...any) {
		if len(probs) < 40 {
			probs = append(probs, fmt.Sprintf(f, a...))
		}
	}
	ids := map[string]int{}
	vmGot := map[string][]string{}
	bGot := map[string][]string{}
	lastState := map[string]time.Time{}
	for _, m := range msgs {
		ids[m.Event.ID]++
		if m.MsgID != m.Event.ID {
			add("seq %d: Nats-Msg-Id %q is not the event id %q", m.Seq, m.MsgID, m.Event.ID)
		}
		switch st := m.Event.ShortType(); {
		case st == "vm.log" || st == "build.log":
			l, err := DecodeLog(m.Event)
			if err != nil {
				add("seq %d: bad log data: %v", m.Seq, err)
				continue
			}
			for _, line := range l.Lines {
				if st == "vm.log" {
					vmGot[l.VMID] = append(vmGot[l.VMID], line.Message)
				} else {
					bGot[l.BuildID] = append(bGot[l.BuildID], line.Message)
				}
			}
		case m.Event.Kind() == "vm":
			if prev, ok := lastState[m.Event.Subject]; ok && m.Event.Time.Before(prev) {
				add("vm %s: %s (time %s) after an event of time %s: out of order", m.Event.Subject, st, m.Event.Time, prev)
			}
			lastState[m.Event.Subject] = m.Event.Time
		}
	}
	for id, n := range ids {
		if n > 1 {
			add("event %s is on the stream %d times", id, n)
		}
	}
	for _, h := range w.hooks {
		if h.acked.Load() && ids[h.eventID] != 1 {
			add("acknowledged webhook %d (%s) is on the stream %d times", h.n, h.msgID, ids[h.eventID])
		}
	}
	cmp := func(kind string, want, got map[string][]string) {
		keys := make([]string, 0, len(want))
		for k := range want {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, id := range keys {
			if d := diffLines(want[id], got[id]); d != "" {
				add("%s %s log: %s", kind, id, d)
			}
		}
	}
	cmp("vm", w.vmLines, vmGot)
	cmp("build", w.bLines, bGot)
	return probs
}

// LineCount is how many log lines the world wrote.
func (w *World) LineCount() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, l := range w.vmLines {
		n += len(l)
	}
	for _, l := range w.bLines {
		n += len(l)
	}
	return n
}

func diffLines(want, got []string) string {
	for i := 0; i < min(len(want), len(got)); i++ {
		if want[i] != got[i] {
			lo := max(0, i-2)
			return fmt.Sprintf("line %d differs: want %q, got %q (want %q..., got %q...)", i, want[i], got[i], want[lo:min(len(want), i+3)], got[lo:min(len(got), i+3)])
		}
	}
	if len(want) != len(got) {
		return fmt.Sprintf("%d lines on the stream, %d written", len(got), len(want))
	}
	return ""
}

// settleStream reads the whole CAKEWORK stream until world.Check, and each
// of more, finds no problem or the deadline passes (the relay may still be
// publishing what it recovered, or an event of an action just taken), and
// returns the last reading and its problems.
func settleStream(ctx context.Context, natsURL string, world *World, deadline time.Time, more ...func([]StreamMsg) []string) ([]StreamMsg, []string) {
	for {
		rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		msgs, err := ReadStream(rctx, natsURL, "CAKEWORK")
		cancel()
		var probs []string
		if err == nil {
			probs = world.Check(msgs)
			for _, check := range more {
				probs = append(probs, check(msgs)...)
			}
			if len(probs) == 0 {
				return msgs, nil
			}
		} else {
			probs = []string{"read stream: " + err.Error()}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return msgs, probs
		}
		_ = CtxSleep(ctx, time.Second)
	}
}
