package reliability

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// FleetOptions configure FleetFailover: relays on a NATS cluster, every
// member taking webhooks, one killed and one frozen while the load runs.
type FleetOptions struct {
	RelayBin, NATSBin, Dir string
	Members                int // relays (and NATS nodes); default 3
	// Load is how long webhooks are sent around each fault; Freeze how
	// long the frozen member stays frozen.
	Load, Freeze time.Duration
	Workers      int // concurrent senders; default 4
	// Settle bounds the wait for every event to reach the callback.
	Settle time.Duration
	Logf   func(string, ...any)
}

// FleetResult is what FleetFailover saw.
type FleetResult struct {
	Sent, Acked, Retried int
	Killed, Frozen       string
	// OnStream counts each acknowledged webhook's event on the stream.
	Duplicates, Missing int
	// DupAnswers are the repeats at another member answered 200 duplicate
	// (of DupAsked).
	DupAnswers, DupAsked int
	Delivered            int
	Redelivered          int
	OutOfOrder           int
	// Slack: the build's parent posts, and its thread replies after the
	// failover of the Slack sink.
	SlackParents, SlackRepliesAfter, SlackRepliesElsewhere int
	// CallbackP99 is webhook-to-callback latency (first delivery).
	CallbackP50, CallbackP99, CallbackMax time.Duration
	Problems                              []string
}

func (r *FleetResult) String() string {
	return fmt.Sprintf("sent %d acked %d (retried at another member %d); killed %s, froze %s; on the stream: %d duplicated, %d missing; repeats answered duplicate %d/%d; callback: %d delivered, %d redelivered, %d out of order, latency p50 %s p99 %s max %s; slack: %d parent(s), %d replies in its thread after the failover, %d elsewhere",
		r.Sent, r.Acked, r.Retried, r.Killed, r.Frozen, r.Duplicates, r.Missing, r.DupAnswers, r.DupAsked,
		r.Delivered, r.Redelivered, r.OutOfOrder, r.CallbackP50, r.CallbackP99, r.CallbackMax,
		r.SlackParents, r.SlackRepliesAfter, r.SlackRepliesElsewhere)
}

// FakeSlack is a Slack Web API that takes chat.postMessage and chat.update
// and records the posts.
type FakeSlack struct {
	*httptest.Server
	mu    sync.Mutex
	posts []SlackPost
	n     int
}

// SlackPost is one chat.postMessage.
type SlackPost struct {
	TS, ThreadTS string
	Form         string // the raw form, to look for text in
	At           time.Time
}

// NewFakeSlack starts one.
func NewFakeSlack() *FakeSlack {
	f := &FakeSlack{}
	f.Server = httptest.NewServer(http.HandlerFunc(f.serve))
	return f
}

func (f *FakeSlack) serve(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	form, _ := url.ParseQuery(string(b))
	w.Header().Set("Content-Type", "application/json")
	switch {
	case strings.HasSuffix(r.URL.Path, "/chat.postMessage"):
		f.mu.Lock()
		f.n++
		ts := fmt.Sprintf("1700000000.%06d", f.n)
		f.posts = append(f.posts, SlackPost{TS: ts, ThreadTS: form.Get("thread_ts"), Form: string(b), At: time.Now()})
		f.mu.Unlock()
		fmt.Fprintf(w, `{"ok":true,"channel":"C1","ts":%q}`, ts)
	case strings.HasSuffix(r.URL.Path, "/chat.update"):
		fmt.Fprintf(w, `{"ok":true,"channel":"C1","ts":%q}`, form.Get("ts"))
	case strings.HasSuffix(r.URL.Path, "/auth.test"):
		fmt.Fprint(w, `{"ok":true,"url":"https://x.slack.com/","team":"T","user":"relay","team_id":"T1","user_id":"U1"}`)
	default:
		fmt.Fprint(w, `{"ok":true}`)
	}
}

// Posts are the posts so far.
func (f *FakeSlack) Posts() []SlackPost {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]SlackPost(nil), f.posts...)
}

// timedReceiver is a Receiver that also notes when each event first
// arrived.
type timedReceiver struct {
	*Receiver
	mu    sync.Mutex
	first map[string]time.Time
}

func (t *timedReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id := r.Header.Get("webhook-id")
	t.mu.Lock()
	if _, ok := t.first[id]; !ok {
		t.first[id] = time.Now()
	}
	t.mu.Unlock()
	t.Receiver.ServeHTTP(w, r)
}

// MemberStatus is the part of GET /v1/status the fleet harness reads.
type MemberStatus struct {
	Cluster ClusterStatus `json:"cluster"`
	Sinks   map[string]struct {
		ActiveMember string `json:"activeMember"`
		Delivered    uint64 `json:"delivered"`
	} `json:"sinks"`
}

// Status fetches the relay's /v1/status.
func (r *Relay) Status(ctx context.Context) (MemberStatus, error) {
	var st MemberStatus
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.URL("/v1/status"), nil)
	if err != nil {
		return st, err
	}
	req.Header.Set("Authorization", "Bearer "+AdminToken)
	hc := &http.Client{Timeout: 2 * time.Second}
	res, err := hc.Do(req)
	if err != nil {
		return st, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return st, fmt.Errorf("status %d", res.StatusCode)
	}
	err = json.NewDecoder(res.Body).Decode(&st)
	return st, err
}

// FleetFailover runs the fleet scenario of issue 17: 3 relays on 3 NATS
// nodes; signed webhooks round-robin to every member (a request that fails
// is sent again, same id and body, to the next member, as a load balancer
// and the sender's retry would); the Slack sink's active member is killed
// (SIGKILL), then the callback sink's active member frozen (SIGSTOP) and
// thawed (SIGCONT). Then it checks: each acknowledged webhook is on the
// stream once, a repeat at any live member is a 200 duplicate, every event
// reaches the callback in stream order (they are all about one resource),
// and the Slack thread started before the kill gets the later reply.
func FleetFailover(ctx context.Context, o FleetOptions) (*FleetResult, error) {
	if o.Members == 0 {
		o.Members = 3
	}
	if o.Workers == 0 {
		o.Workers = 4
	}
	logf := o.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	nc, err := NewNATSCluster(o.NATSBin, o.Dir, o.Members)
	if err != nil {
		return nil, err
	}
	if err := nc.Start(); err != nil {
		return nil, err
	}
	defer nc.Kill()
	if err := nc.WaitJetStream(ctx, min(o.Members, 3), 30*time.Second); err != nil {
		return nil, err
	}

	recv := &timedReceiver{Receiver: NewReceiver(0), first: map[string]time.Time{}}
	cb := httptest.NewServer(recv)
	defer cb.Close()
	slack := NewFakeSlack()
	defer slack.Close()

	addrs, err := FreeAddrs(o.Members)
	if err != nil {
		return nil, err
	}
	relays := make([]*Relay, o.Members)
	for i := range relays {
		dir := filepath.Join(o.Dir, fmt.Sprintf("m%d", i+1))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		r, err := NewRelay(o.RelayBin, dir, RelayConfig{
			DataDir: dir, HTTPAddr: addrs[i], BusURL: nc.URL(),
			Member: fmt.Sprintf("m%d", i+1), Replicas: min(o.Members, 3),
			CallbackURL: cb.URL, CallbackEvents: []string{"webhook.*"},
			SlackURL: slack.URL + "/api/", LogLevel: "info",
		})
		if err != nil {
			return nil, err
		}
		relays[i] = r
	}
	for _, r := range relays {
		if err := r.Start(); err != nil {
			return nil, err
		}
		defer func() {
			if r.P != nil && !r.P.Exited() {
				r.P.Cont()
				r.P.Kill()
			}
		}()
	}
	res := &FleetResult{}
	problem := func(f string, a ...any) { res.Problems = append(res.Problems, fmt.Sprintf(f, a...)) }
	byName := func(name string) *Relay {
		for _, r := range relays {
			if r.Cfg.Member == name {
				return r
			}
		}
		return nil
	}
	var dead sync.Map // member name -> true while killed or frozen
	live := func() []*Relay {
		var out []*Relay
		for _, r := range relays {
			if _, d := dead.Load(r.Cfg.Member); !d {
				out = append(out, r)
			}
		}
		return out
	}
	activeOf := func(sink string, timeout time.Duration, not string) string {
		deadline := time.Now().Add(timeout)
		for time.Now().Before(deadline) {
			for _, r := range live() {
				st, err := r.Status(ctx)
				if err != nil {
					continue
				}
				if m := st.Sinks[sink].ActiveMember; m != "" && m != not {
					return m
				}
			}
			time.Sleep(200 * time.Millisecond)
		}
		return ""
	}

	// The load: webhook n goes to member n mod Members, and on failure to
	// the next, until one acknowledges it.
	sender := NewSender(o.Workers * 2)
	var (
		mu     sync.Mutex
		acked  = map[string]string{} // event id -> webhook id
		sentAt = map[string]time.Time{}
		order  []string // event ids, in order acknowledged
		next   atomic.Int64
		stop   = make(chan struct{})
		wg     sync.WaitGroup
	)
	post := func(n int, msgID string, body []byte, path string) (int, bool) {
		retried := 0
		for try := 0; ; try++ {
			select {
			case <-stop:
				if path == "/webhooks/"+GenericReceiver {
					return retried, false
				}
			default:
			}
			r := relays[(n+try)%len(relays)]
			if try > 0 {
				retried = 1
			}
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			a, err := sender.Post(cctx, r.URL(path), msgID, body)
			cancel()
			if err == nil && (a.Status == http.StatusAccepted || a.Status == http.StatusOK) {
				return retried, true
			}
			if ctx.Err() != nil {
				return retried, false
			}
			if try > 0 && try%len(relays) == 0 {
				time.Sleep(200 * time.Millisecond)
			}
		}
	}
	for range o.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				n := int(next.Add(1))
				msgID := fmt.Sprintf("fleet-%d", n)
				body := fmt.Appendf(nil, `{"n":%d}`, n)
				id := GenericEventID(msgID, body)
				t0 := time.Now()
				retried, ok := post(n, msgID, body, "/webhooks/"+GenericReceiver)
				mu.Lock()
				res.Sent++
				res.Retried += retried
				if ok {
					res.Acked++
					acked[id] = msgID
					sentAt[id] = t0
					order = append(order, id)
				}
				mu.Unlock()
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	sleep := func(d time.Duration) { _ = CtxSleep(ctx, d) }

	// A Slack thread before the failover.
	sleep(o.Load)
	if _, ok := post(0, "build-b1-created", []byte(`{"buildId":"b1","status":"created"}`), "/webhooks/cakework"); !ok {
		problem("the build.created webhook was not acknowledged")
	}
	var parentTS string
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline) && parentTS == ""; sleep(100 * time.Millisecond) {
		for _, p := range slack.Posts() {
			if p.ThreadTS == "" && strings.Contains(p.Form, "b1") {
				parentTS = p.TS
			}
		}
	}
	if parentTS == "" {
		problem("no Slack parent for build b1 within 20s")
	}

	// Kill the Slack sink's active member.
	res.Killed = activeOf("sl", 10*time.Second, "")
	victim := byName(res.Killed)
	if victim == nil {
		problem("no member says it delivers the Slack sink (activeMember); killing m1")
		victim, res.Killed = relays[0], relays[0].Cfg.Member
	}
	dead.Store(res.Killed, true)
	killedAt := time.Now()
	victim.P.Kill()
	logf("killed %s (the Slack sink's active member)", res.Killed)
	if _, ok := post(1, "build-b1-succeeded", []byte(`{"buildId":"b1","status":"succeeded","imageId":"img-1"}`), "/webhooks/cakework"); !ok {
		problem("the build.succeeded webhook was not acknowledged")
	}
	sleep(o.Load)

	// Freeze the callback sink's active member, then thaw it.
	res.Frozen = activeOf("cb", 30*time.Second, res.Killed)
	if f := byName(res.Frozen); f != nil {
		dead.Store(res.Frozen, true)
		f.P.Stop()
		logf("froze %s (the callback sink's active member) for %s", res.Frozen, o.Freeze)
		sleep(o.Freeze)
		f.P.Cont()
		dead.Delete(res.Frozen)
	} else {
		problem("no live member says it delivers the callback sink")
	}
	sleep(o.Load)
	close(stop)
	wg.Wait()
	logf("load done: sent %d, acked %d", res.Sent, res.Acked)

	// A repeat at every live member is a duplicate.
	mu.Lock()
	var sample []string
	for i := 0; i < len(order) && len(sample) < 10; i += max(1, len(order)/10) {
		sample = append(sample, order[i])
	}
	mu.Unlock()
	for _, id := range sample {
		msgID := acked[id]
		var n int
		fmt.Sscanf(msgID, "fleet-%d", &n)
		body := fmt.Appendf(nil, `{"n":%d}`, n)
		for _, r := range live() {
			res.DupAsked++
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			a, err := sender.Post(cctx, r.URL("/webhooks/"+GenericReceiver), msgID, body)
			cancel()
			if err == nil && a.Status == http.StatusOK && strings.Contains(a.Body, `"duplicate":true`) {
				res.DupAnswers++
			} else if err != nil {
				problem("repeat of %s at %s: %v", msgID, r.Cfg.Member, err)
			} else {
				problem("repeat of %s at %s: %d %s", msgID, r.Cfg.Member, a.Status, a.Body)
			}
		}
	}

	// Every acknowledged event reaches the callback.
	deadline := time.Now().Add(o.Settle)
	for {
		missing := 0
		for id := range acked {
			if recv.Delivered(id) == 0 {
				missing++
			}
		}
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			problem("%d acknowledged events never reached the callback within %s", missing, o.Settle)
			break
		}
		sleep(250 * time.Millisecond)
	}

	// On the stream exactly once.
	msgs, err := ReadStream(ctx, nc.URL(), "CAKEWORK")
	if err != nil {
		return res, fmt.Errorf("read the stream: %w", err)
	}
	count := map[string]int{}
	pos := map[string]int{}
	for i, m := range msgs {
		count[m.MsgID]++
		if m.Event.Subject == GenericReceiver {
			pos[m.Event.ID] = i
		}
	}
	for id := range acked {
		switch c := count[id]; {
		case c == 0:
			res.Missing++
		case c > 1:
			res.Duplicates++
		}
	}
	if res.Missing > 0 || res.Duplicates > 0 {
		problem("acknowledged webhooks on the stream: %d missing, %d more than once", res.Missing, res.Duplicates)
	}
	if res.DupAnswers != res.DupAsked {
		problem("%d of %d repeats at another member were not 200 duplicate", res.DupAsked-res.DupAnswers, res.DupAsked)
	}

	// In stream order at the callback (one resource: the receiver).
	first := recv.Order(GenericReceiver)
	last := -1
	for _, id := range first {
		p, ok := pos[id]
		if !ok {
			continue
		}
		if p < last {
			res.OutOfOrder++
		}
		last = max(last, p)
	}
	if res.OutOfOrder > 0 {
		problem("%d events reached the callback before an earlier one", res.OutOfOrder)
	}
	_, _, res.Delivered, res.Redelivered = recv.Stats()
	var lat Latencies
	recv.mu.Lock()
	for id, t0 := range sentAt {
		if t1, ok := recv.first[id]; ok {
			lat.Add(t1.Sub(t0))
		}
	}
	recv.mu.Unlock()
	if ps, n := lat.Take(50, 99, 100); n > 0 {
		res.CallbackP50, res.CallbackP99, res.CallbackMax = ps[0], ps[1], ps[2]
	}

	// The Slack thread.
	for deadline := time.Now().Add(o.Settle); time.Now().Before(deadline); sleep(250 * time.Millisecond) {
		res.SlackParents, res.SlackRepliesAfter, res.SlackRepliesElsewhere = 0, 0, 0
		for _, p := range slack.Posts() {
			switch {
			case p.ThreadTS == "" && strings.Contains(p.Form, "b1"):
				res.SlackParents++
			case p.ThreadTS == parentTS && p.At.After(killedAt) && strings.Contains(p.Form, "succeeded"):
				res.SlackRepliesAfter++
			case p.ThreadTS != "" && p.ThreadTS != parentTS:
				res.SlackRepliesElsewhere++
			}
		}
		if res.SlackRepliesAfter > 0 {
			break
		}
	}
	if res.SlackParents != 1 || res.SlackRepliesAfter == 0 || res.SlackRepliesElsewhere > 0 {
		problem("slack: build b1 has %d parent posts (want 1), %d succeeded replies in its thread after the failover (want 1 or more), %d replies in another thread",
			res.SlackParents, res.SlackRepliesAfter, res.SlackRepliesElsewhere)
	}
	if len(res.Problems) > 0 {
		for _, r := range relays {
			if r.P != nil {
				logf("--- %s output (tail):\n%s", r.Cfg.Member, tail(r.P.Logs.String(), 4000))
			}
		}
	}
	return res, nil
}

// WaitJetStream waits until the cluster places a stream of replicas
// (its JetStream meta leader is elected and enough peers joined): a relay
// started before that waits out its bus timeout and may fail to start.
func (c *NATSCluster) WaitJetStream(ctx context.Context, replicas int, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		last = c.probe(ctx, replicas)
		if last == nil {
			return nil
		}
		if err := CtxSleep(ctx, 250*time.Millisecond); err != nil {
			return fmt.Errorf("the NATS cluster did not take an R%d stream within %s: %w", replicas, timeout, last)
		}
	}
}

func (c *NATSCluster) probe(ctx context.Context, replicas int) error {
	nc, err := nats.Connect(c.URL(), nats.Timeout(2*time.Second))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if _, err := js.CreateOrUpdateStream(pctx, jetstream.StreamConfig{Name: "PROBE", Subjects: []string{"probe.>"}, Replicas: replicas, Storage: jetstream.MemoryStorage}); err != nil {
		return err
	}
	return js.DeleteStream(pctx, "PROBE")
}
