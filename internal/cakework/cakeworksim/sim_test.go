package cakeworksim_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/cakework-relay/cakework-relay/internal/cakework"
	"github.com/cakework-relay/cakework-relay/internal/cakework/cakeworksim"
	"github.com/cakework-relay/cakework-relay/internal/clock"
)

const key = "sim-key"

var epoch = time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)

func start(t *testing.T, o cakeworksim.Options) (*cakeworksim.Sim, *clock.Fake, *httptest.Server) {
	t.Helper()
	clk := clock.NewFake(epoch)
	o.Clock, o.APIKey = clk, key
	s := cakeworksim.New(o)
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	return s, clk, srv
}

// get does a raw request and returns status and body.
func get(t *testing.T, srv *httptest.Server, method, path string, q url.Values) (int, string) {
	t.Helper()
	u := srv.URL + path
	if q != nil {
		u += "?" + q.Encode()
	}
	req, _ := http.NewRequest(method, u, nil)
	req.Header.Set("X-Api-Key", key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestBuildStateMachine(t *testing.T) {
	s, clk, _ := start(t, cakeworksim.Options{BuildDuration: 5 * time.Second, BuildLogEvery: time.Second})
	ok := s.CreateBuild(cakeworksim.BuildSpec{})
	bad := s.CreateBuild(cakeworksim.BuildSpec{Fail: true, Duration: 2 * time.Second})
	manual := s.CreateBuild(cakeworksim.BuildSpec{Manual: true})

	clk.Advance(4 * time.Second)
	if b, _ := s.Build(ok.BuildID); b.Status != cakework.BuildCreated || b.ImageID != "" {
		t.Fatalf("before its duration: %+v", b)
	}
	if n := s.LogCount(cakework.LogBuild, ok.BuildID); n != 5 { // t=0..4
		t.Fatalf("build logs while running: %d, want 5", n)
	}
	if b, _ := s.Build(bad.BuildID); b.Status != cakework.BuildFailed || !b.UpdatedAt.Equal(epoch.Add(2*time.Second)) {
		t.Fatalf("failing build: %+v", b)
	}
	clk.Advance(time.Second)
	b, _ := s.Build(ok.BuildID)
	if b.Status != cakework.BuildSucceeded || b.ImageID == "" || !b.UpdatedAt.Equal(epoch.Add(5*time.Second)) {
		t.Fatalf("after its duration: %+v", b)
	}
	n := s.LogCount(cakework.LogBuild, ok.BuildID)
	clk.Advance(time.Minute)
	if s.LogCount(cakework.LogBuild, ok.BuildID) != n {
		t.Fatal("a finished build kept logging")
	}
	if b, _ := s.Build(manual.BuildID); b.Status != cakework.BuildCreated {
		t.Fatalf("manual build moved by itself: %+v", b)
	}
	s.SetBuildStatus(manual.BuildID, cakework.BuildSucceeded, "IMG1")
	if b, _ := s.Build(manual.BuildID); b.Status != cakework.BuildSucceeded || b.ImageID != "IMG1" {
		t.Fatalf("SetBuildStatus: %+v", b)
	}
}

func TestVMsLogAndGoQuiet(t *testing.T) {
	s, clk, srv := start(t, cakeworksim.Options{VMLogEvery: time.Second})
	c, _ := cakework.New(cakework.Options{BaseURL: srv.URL, APIKey: key, Clock: clk})
	ctx := context.Background()
	vm, err := c.StartVM(ctx, cakework.StartVMRequest{ImageID: "IMG", CPU: 1, Memory: 256})
	if err != nil {
		t.Fatal(err)
	}
	if n := s.LogCount(cakework.LogVM, vm.ID); n != 2 {
		t.Fatalf("boot lines: %d", n)
	}
	clk.Advance(10 * time.Second)
	if n := s.LogCount(cakework.LogVM, vm.ID); n != 12 {
		t.Fatalf("after 10s at 1/s: %d lines, want 12", n)
	}
	s.SetVMQuiet(vm.ID, true)
	clk.Advance(10 * time.Second)
	if n := s.LogCount(cakework.LogVM, vm.ID); n != 12 {
		t.Fatalf("quiet VM logged: %d", n)
	}
	if err := c.StopVM(ctx, vm.ID); err != nil {
		t.Fatal(err)
	}
	if err := c.StopVM(ctx, vm.ID); !cakework.IsAlreadyStopped(err) {
		t.Fatalf("second stop: %v", err)
	}
	if !s.SetVMState(vm.ID, "suspended") {
		t.Fatal("SetVMState")
	}
	if v, _ := c.GetVM(ctx, vm.ID); v.State != "suspended" {
		t.Fatalf("unknown states pass through: %q", v.State)
	}
	s.RemoveVM(vm.ID)
	if _, err := c.GetVM(ctx, vm.ID); !cakework.IsNotFound(err) {
		t.Fatalf("removed VM: %v", err)
	}
}

func TestDestroyedTTL(t *testing.T) {
	s, clk, _ := start(t, cakeworksim.Options{DestroyedTTL: time.Minute})
	vm := s.AddVM(cakework.VM{})
	s.SetVMState(vm.ID, cakework.VMDestroyed)
	clk.Advance(59 * time.Second)
	if _, ok := s.VM(vm.ID); !ok {
		t.Fatal("gone too early")
	}
	clk.Advance(time.Second)
	if _, ok := s.VM(vm.ID); ok {
		t.Fatal("destroyed VM outlived its TTL")
	}
}

func TestLogEndpointRules(t *testing.T) {
	s, _, srv := start(t, cakeworksim.Options{LogBatchMin: 1})
	b := s.CreateBuild(cakeworksim.BuildSpec{Manual: true})
	for _, m := range []string{"alpha", "Beta", "gamma", "beta again"} {
		s.AppendBuildLogs(b.BuildID, cakework.LogLine{Message: m})
	}
	path := "/v1/image/build/" + b.BuildID + "/logs"
	page := func(q url.Values) (int, cakework.LogPage) {
		st, body := get(t, srv, "GET", path, q)
		var p cakework.LogPage
		if st == 200 {
			var err error
			if p, err = cakework.DecodeLogPage([]byte(body)); err != nil {
				t.Fatalf("%s: %v", body, err)
			}
		}
		return st, p
	}
	// newest_first pages backwards; query filters case-insensitively.
	st, p := page(url.Values{"order": {"newest_first"}, "batch": {"1"}, "query": {"BETA"}})
	if st != 200 || len(p.Lines) != 1 || p.Lines[0].Message != "beta again" || p.Pagination == "" {
		t.Fatalf("newest_first page 1: %d %+v", st, p)
	}
	next := url.Values{"order": {"newest_first"}, "batch": {"1"}, "query": {"BETA"}, "pagination": {p.Pagination}, "from": {p.From}, "to": {p.To}}
	st, p2 := page(next)
	if st != 200 || len(p2.Lines) != 1 || p2.Lines[0].Message != "Beta" || p2.Pagination != "" {
		t.Fatalf("newest_first page 2: %d %+v", st, p2)
	}
	for name, change := range map[string]func(url.Values){
		"other order": func(v url.Values) { v.Set("order", "oldest_first") },
		"other query": func(v url.Values) { v.Set("query", "gamma") },
		"no to":       func(v url.Values) { v.Del("to") },
		"other from":  func(v url.Values) { v.Set("from", "2024-05-01T11:00:00+0000") },
		"bad token":   func(v url.Values) { v.Set("pagination", "!!!") },
	} {
		q := url.Values{}
		for k, v := range next {
			q[k] = append([]string(nil), v...)
		}
		change(q)
		if st, _ := page(q); st != 400 {
			t.Errorf("%s: status %d, want 400", name, st)
		}
	}
	for name, q := range map[string]url.Values{
		"bad batch":     {"batch": {"ten"}},
		"bad order":     {"order": {"sideways"}},
		"bad from":      {"from": {"last tuesday"}},
		"from after to": {"from": {"2024-05-01T13:00:00+0000"}, "to": {"2024-05-01T12:00:00+0000"}},
	} {
		if st, _ := page(q); st != 400 {
			t.Errorf("%s: status %d, want 400", name, st)
		}
	}
	// Batch is capped at 1000.
	for i := range 1100 {
		s.AppendBuildLogs(b.BuildID, cakework.LogLine{Message: strconv.Itoa(i)})
	}
	if _, p := page(url.Values{"batch": {"5000"}}); len(p.Lines) != 1000 {
		t.Fatalf("batch cap: %d lines", len(p.Lines))
	}
	if st, body := get(t, srv, "GET", "/v1/image/build/missing/logs", nil); st != 404 || body != "{\"message\":\"build not found\"}\n" {
		t.Fatalf("missing build logs: %d %q", st, body)
	}
}

func TestLogBatchMinimum(t *testing.T) {
	s, _, srv := start(t, cakeworksim.Options{})
	vm := s.AddVM(cakework.VM{})
	s.SetVMQuiet(vm.ID, true)
	for range 60 {
		s.AppendVMLogs(vm.ID, cakework.LogLine{Message: "x"})
	}
	_, body := get(t, srv, "GET", "/v1/vm/"+vm.ID+"/logs", url.Values{"batch": {"10"}})
	p, err := cakework.DecodeLogPage([]byte(body))
	if err != nil || len(p.Lines) != 50 {
		t.Fatalf("batch below 50 is raised to 50: %d lines, %v", len(p.Lines), err)
	}
}

func TestAuthAndUnknownRoute(t *testing.T) {
	_, _, srv := start(t, cakeworksim.Options{})
	resp, err := http.Get(srv.URL + "/v1/vms")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 401 || len(b) != 0 {
		t.Fatalf("no key: %d %q", resp.StatusCode, b)
	}
	if st, _ := get(t, srv, "GET", "/vms", nil); st != 404 {
		t.Fatalf("/vms without /v1: %d", st)
	}
	if st, _ := get(t, srv, "DELETE", "/v1/vm/x", nil); st != 404 {
		t.Fatalf("wrong method: %d", st)
	}
}

func TestFaultsPerRoute(t *testing.T) {
	s, clk, srv := start(t, cakeworksim.Options{})
	c, _ := cakework.New(cakework.Options{BaseURL: srv.URL, APIKey: key, Clock: clk})
	s.SetFaults(cakeworksim.Faults{Routes: []string{cakeworksim.RouteListVMs}, ErrorRate: 1, ErrorStatus: 502})
	ctx := context.Background()
	if _, err := c.ListVMs(ctx, cakework.ListVMsQuery{}); !isStatus(err, 502) {
		t.Fatalf("listVMs: %v", err)
	}
	if _, err := c.GetVM(ctx, "missing"); !cakework.IsNotFound(err) {
		t.Fatalf("getVM must be untouched: %v", err)
	}
	if got := s.Calls(); got[cakeworksim.RouteListVMs] != 1 || got[cakeworksim.RouteGetVM] != 1 {
		t.Fatalf("calls: %v", got)
	}
	s.ResetCalls()
	if s.TotalCalls() != 0 {
		t.Fatal("ResetCalls")
	}
}

type received struct {
	path    string
	body    map[string]string
	headers http.Header
}

func TestWebhooks(t *testing.T) {
	secret := "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	var mu sync.Mutex
	var got []received
	failFirst := true
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		raw, _ := io.ReadAll(r.Body)
		if failFirst {
			failFirst = false
			w.WriteHeader(503)
			return
		}
		wh, _ := standardwebhooks.NewWebhook(secret)
		if err := wh.VerifyIgnoringTimestamp(raw, r.Header); err != nil {
			t.Errorf("signature: %v", err)
		}
		var body map[string]string
		_ = json.Unmarshal(raw, &body)
		got = append(got, received{r.URL.Path, body, r.Header.Clone()})
	}))
	defer recv.Close()

	s, clk, _ := start(t, cakeworksim.Options{WebhookURL: recv.URL + "/hooks", WebhookSecret: secret, BuildDuration: time.Second})
	ok := s.CreateBuild(cakeworksim.BuildSpec{ID: "b-ok"})
	s.CreateBuild(cakeworksim.BuildSpec{ID: "b-bad", Fail: true})
	clk.Advance(time.Second)
	s.Step(context.Background()) // b-bad (first by id) gets a 503, b-ok is delivered
	s.Step(context.Background()) // b-bad backs off: not yet
	if s.PendingWebhooks() != 1 {
		t.Fatalf("pending %d during the backoff, want 1", s.PendingWebhooks())
	}
	clk.Advance(250 * time.Millisecond) // the first backoff is at most 250ms
	s.Step(context.Background())        // redelivery
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 2 || s.PendingWebhooks() != 0 {
		t.Fatalf("deliveries: %+v pending %d", got, s.PendingWebhooks())
	}
	byPath := map[string]received{}
	for _, r := range got {
		byPath[r.path] = r
	}
	b, _ := s.Build(ok.BuildID)
	if r := byPath["/hooks/build/succeeded"]; r.body["buildId"] != "b-ok" || r.body["imageId"] != b.ImageID || len(r.body) != 2 {
		t.Fatalf("succeeded webhook: %+v", r)
	}
	r := byPath["/hooks/build/failed"]
	if r.body["buildId"] != "b-bad" || len(r.body) != 1 {
		t.Fatalf("failed webhook: %+v", r)
	}
	if r.headers.Get("webhook-id") != "msg_b-bad_failed" || r.headers.Get("webhook-timestamp") != strconv.FormatInt(epoch.Add(time.Second).Unix(), 10) {
		t.Fatalf("headers: %v", r.headers)
	}
}

func TestWebhookSingleUnsigned(t *testing.T) {
	var mu sync.Mutex
	var got []received
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		var body map[string]string
		_ = json.NewDecoder(r.Body).Decode(&body)
		got = append(got, received{r.URL.Path, body, r.Header.Clone()})
	}))
	defer recv.Close()
	s, _, _ := start(t, cakeworksim.Options{WebhookURL: recv.URL + "/webhooks/cakework", WebhookMode: cakeworksim.WebhookSingle})
	b := s.CreateBuild(cakeworksim.BuildSpec{Manual: true})
	s.SetBuildStatus(b.BuildID, cakework.BuildFailed, "")
	s.Step(context.Background())
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1 || got[0].path != "/webhooks/cakework" || got[0].body["status"] != "failed" || got[0].body["buildId"] != b.BuildID ||
		got[0].headers.Get("webhook-signature") != "" {
		t.Fatalf("single-mode webhook: %+v", got)
	}
}

func TestWorkload(t *testing.T) {
	s, clk, _ := start(t, cakeworksim.Options{BuildDuration: 2 * time.Second, VMLogEvery: time.Second, Seed: 7})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.RunWorkload(ctx, cakeworksim.WorkloadOptions{
			BuildEvery: 3 * time.Second, VMEvery: 2 * time.Second, FailRatio: 0.5, IdleRatio: 0.5,
			QuietAfter: 4 * time.Second, MaxVMs: 3,
		})
	}()
	for range 60 {
		waitWaiters(t, clk)
		clk.Advance(time.Second)
	}
	waitWaiters(t, clk)
	cancel()
	<-done

	builds := map[string]int{}
	for _, b := range s.Builds() {
		builds[b.Status]++
	}
	if builds[cakework.BuildSucceeded] == 0 || builds[cakework.BuildFailed] == 0 || len(s.Builds()) < 19 {
		t.Fatalf("builds after 60s: %v", builds)
	}
	vms := s.VMs()
	states := map[string]int{}
	for _, v := range vms {
		states[v.State]++
	}
	if len(vms) < 25 || states[cakework.VMDestroyed] == 0 || states[cakework.VMStarted] < 3 {
		t.Fatalf("VMs after 60s: %d, states %v", len(vms), states)
	}
	// Idle VMs stay started and stop logging; busy ones are capped.
	quiet := 0
	for _, v := range vms {
		if v.State != cakework.VMStarted {
			continue
		}
		n := s.LogCount(cakework.LogVM, v.ID)
		clk.Advance(5 * time.Second)
		if s.LogCount(cakework.LogVM, v.ID) == n {
			quiet++
		}
	}
	if quiet == 0 {
		t.Fatalf("no idle VMs among %v", states)
	}
}

func waitWaiters(t *testing.T, clk *clock.Fake) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for clk.Waiters() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("workload is not waiting on the clock")
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// Split mode puts /build/<status> into the path, before the query, so a
// token URL (?token=...) keeps its token; what is not an http(s) URL with
// a host is refused with the URL named.
func TestSplitWebhookURL(t *testing.T) {
	for _, tc := range []struct{ base, status, want string }{
		{"http://relay:8080/webhooks/cakework?token=abc", "succeeded", "http://relay:8080/webhooks/cakework/build/succeeded?token=abc"},
		{"http://relay/webhooks/cakework/?token=a%2Bb&x=1", "failed", "http://relay/webhooks/cakework/build/failed?token=a%2Bb&x=1"},
		{"http://relay/webhooks/cakework", "failed", "http://relay/webhooks/cakework/build/failed"},
		{"https://relay?token=abc", "succeeded", "https://relay/build/succeeded?token=abc"},
		{"http://relay/hooks?token=abc#frag", "succeeded", "http://relay/hooks/build/succeeded?token=abc#frag"},
		{"http://relay/a%2Fb?token=abc", "failed", "http://relay/a%2Fb/build/failed?token=abc"},
	} {
		got, err := cakeworksim.SplitWebhookURL(tc.base, tc.status)
		if err != nil || got != tc.want {
			t.Errorf("SplitWebhookURL(%q, %q) = %q, %v; want %q", tc.base, tc.status, got, err, tc.want)
		}
	}
	for _, bad := range []string{"relay:8080/webhooks/cakework", "ftp://relay/x", "http:///path", "http://relay/%zz"} {
		_, err := cakeworksim.SplitWebhookURL(bad, "succeeded")
		if err == nil || !strings.Contains(err.Error(), bad) || cakeworksim.CheckWebhookURL(bad) == nil {
			t.Errorf("%q: %v, want an error naming it", bad, err)
		}
	}
}

// Through real delivery: a webhook URL with ?token= reaches a receiver
// that checks the token in the query, at /build/<status>.
func TestWebhookTokenURL(t *testing.T) {
	var mu sync.Mutex
	var got []string
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, r.URL.RequestURI())
		mu.Unlock()
		if r.URL.Query().Get("token") != "abc" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.WriteHeader(http.StatusAccepted)
	}))
	defer recv.Close()
	s, _, _ := start(t, cakeworksim.Options{WebhookURL: recv.URL + "/webhooks/cakework?token=abc"})
	ok := s.CreateBuild(cakeworksim.BuildSpec{Manual: true})
	bad := s.CreateBuild(cakeworksim.BuildSpec{Manual: true})
	s.SetBuildStatus(ok.BuildID, cakework.BuildSucceeded, "IMG1")
	s.SetBuildStatus(bad.BuildID, cakework.BuildFailed, "")
	s.Step(context.Background())
	mu.Lock()
	defer mu.Unlock()
	want := []string{"/webhooks/cakework/build/succeeded?token=abc", "/webhooks/cakework/build/failed?token=abc"}
	if strings.Join(got, " ") != strings.Join(want, " ") || s.PendingWebhooks() != 0 {
		t.Fatalf("requests %q (pending %d), want %q", got, s.PendingWebhooks(), want)
	}
}

// flaky is a webhook receiver that drops connections while down, and
// records the sim's clock at each request.
type flaky struct {
	clk  *clock.Fake
	mu   sync.Mutex
	down bool
	at   []time.Time // every request
	ok   int         // requests answered 2xx
}

func (f *flaky) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.at = append(f.at, f.clk.Now())
	if f.down {
		// As a relay that is not listening: no answer at all.
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close()
		}
		return
	}
	f.ok++
	w.WriteHeader(http.StatusAccepted)
}

func (f *flaky) stats() (requests, ok int, at []time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.at), f.ok, slices.Clone(f.at)
}

// A build webhook sent while the receiver is down (a relay restarting) is
// retried, backing off on the sim's clock, and delivered once the receiver
// is back, within the default retry window of 30s.
func TestWebhookRetriedUntilReceiverIsBack(t *testing.T) {
	clk := clock.NewFake(epoch)
	f := &flaky{clk: clk, down: true}
	recv := httptest.NewServer(f)
	defer recv.Close()
	s := cakeworksim.New(cakeworksim.Options{Clock: clk, WebhookURL: recv.URL + "/webhooks/cakework"})
	b := s.CreateBuild(cakeworksim.BuildSpec{Manual: true})
	s.SetBuildStatus(b.BuildID, cakework.BuildSucceeded, "IMG1")

	ctx := context.Background()
	step := func(d time.Duration) {
		for range d / (100 * time.Millisecond) {
			s.Step(ctx)
			clk.Advance(100 * time.Millisecond)
		}
	}
	step(20 * time.Second) // down for 20s: 200 steps
	n, _, _ := f.stats()
	// Backoff from 125-250ms doubling to 2.5-5s: 8 to 13 attempts in 20s.
	if n < 5 || n > 15 || s.PendingWebhooks() != 1 {
		t.Fatalf("%d attempts in 20s down (pending %d); want a backoff, 5 to 15", n, s.PendingWebhooks())
	}

	f.mu.Lock()
	f.down = false
	f.mu.Unlock()
	step(5100 * time.Millisecond) // the longest backoff is 5s
	n2, ok, _ := f.stats()
	if ok != 1 || s.PendingWebhooks() != 0 {
		t.Fatalf("after the receiver came back: %d delivered, pending %d (%d attempts)", ok, s.PendingWebhooks(), n2)
	}
	step(10 * time.Second)
	if n3, ok, _ := f.stats(); n3 != n2 || ok != 1 {
		t.Fatalf("sent again after delivery: %d requests, %d delivered", n3-n2, ok)
	}
}

// WebhookRetryFor bounds the retries, with a last attempt at the deadline;
// a cancelled context (shutdown) sends nothing and keeps the webhook.
func TestWebhookRetryForBoundsRetries(t *testing.T) {
	clk := clock.NewFake(epoch)
	f := &flaky{clk: clk, down: true}
	recv := httptest.NewServer(f)
	defer recv.Close()
	s := cakeworksim.New(cakeworksim.Options{Clock: clk, WebhookURL: recv.URL, WebhookRetryFor: 3 * time.Second})
	b := s.CreateBuild(cakeworksim.BuildSpec{Manual: true})
	s.SetBuildStatus(b.BuildID, cakework.BuildFailed, "")

	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	s.Step(cancelled)
	if n, _, _ := f.stats(); n != 0 || s.PendingWebhooks() != 1 {
		t.Fatalf("with ctx cancelled: %d requests, pending %d; want 0 and 1", n, s.PendingWebhooks())
	}

	for range 40 { // 4s in 100ms steps
		s.Step(context.Background())
		clk.Advance(100 * time.Millisecond)
	}
	n, _, at := f.stats()
	if s.PendingWebhooks() != 0 {
		t.Fatalf("still pending 4s into a 3s retry window (%d attempts)", n)
	}
	if n < 3 || !at[n-1].Equal(at[0].Add(3*time.Second)) {
		t.Fatalf("attempts at %v; want several, the last one 3s after the first", at)
	}
	// Negative: a single attempt.
	s1 := cakeworksim.New(cakeworksim.Options{Clock: clk, WebhookURL: recv.URL, WebhookRetryFor: -1})
	b = s1.CreateBuild(cakeworksim.BuildSpec{Manual: true})
	s1.SetBuildStatus(b.BuildID, cakework.BuildFailed, "")
	s1.Step(context.Background())
	if n2, _, _ := f.stats(); n2 != n+1 || s1.PendingWebhooks() != 0 {
		t.Fatalf("WebhookRetryFor -1: %d attempts, pending %d; want 1 and 0", n2-n, s1.PendingWebhooks())
	}
}

func isStatus(err error, code int) bool {
	var ae *cakework.APIError
	return errors.As(err, &ae) && ae.Status == code
}
