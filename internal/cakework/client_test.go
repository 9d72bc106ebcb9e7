package cakework_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/cakework"
	"github.com/cakework-relay/cakework-relay/internal/cakework/cakeworksim"
	"github.com/cakework-relay/cakework-relay/internal/clock"
)

const testKey = "ck_test_6b1f0c9a"

var epoch = time.Date(2023, 3, 7, 6, 12, 56, 0, time.UTC)

type env struct {
	sim *cakeworksim.Sim
	clk *clock.Fake
	srv *httptest.Server
	c   *cakework.Client
}

// newEnv runs the simulator on a real HTTP server and a client pointed at
// it, both on one fake clock.
func newEnv(t testing.TB, simOpts cakeworksim.Options, opts cakework.Options) *env {
	t.Helper()
	clk := clock.NewFake(epoch)
	simOpts.APIKey = testKey
	if simOpts.Clock == nil {
		simOpts.Clock = clk
	}
	sim := cakeworksim.New(simOpts)
	srv := httptest.NewServer(sim.Handler())
	t.Cleanup(srv.Close)
	opts.BaseURL = srv.URL
	if opts.APIKey == "" {
		opts.APIKey = testKey
	}
	if opts.Clock == nil {
		opts.Clock = clk
	}
	opts.Version = "1.2.3"
	c, err := cakework.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return &env{sim: sim, clk: clk, srv: srv, c: c}
}

func TestEveryMethod(t *testing.T) {
	e := newEnv(t, cakeworksim.Options{BuildDuration: 3 * time.Second, BuildLogEvery: time.Second}, cakework.Options{})
	ctx := context.Background()

	img, err := e.c.ImportImage(ctx, cakework.ImportImageRequest{ImageURI: "123.dkr.ecr.us-east-1.amazonaws.com/app:1", Password: "pw"})
	if err != nil || img.ImageID == "" {
		t.Fatalf("ImportImage: %+v %v", img, err)
	}

	b, err := e.c.BuildImageFromFiles(ctx, cakework.BuildFromFilesRequest{
		Dockerfile: "FROM scratch # sim:succeed", Files: []cakework.BuildFile{{Dir: ".", Name: "main.py", Content: "print(1)"}}})
	if err != nil || b.Status != cakework.BuildCreated || !b.CreatedAt.Equal(epoch) || b.CreatedAt.Location() != time.UTC {
		t.Fatalf("BuildImageFromFiles: %+v %v", b, err)
	}
	gb, err := e.c.BuildImageFromGithub(ctx, cakework.BuildFromGithubRequest{
		Dockerfile: "FROM scratch # sim:fail", Token: "ghs_x", Repository: "acme/app", Branch: "main"})
	if err != nil || gb.Status != cakework.BuildCreated {
		t.Fatalf("BuildImageFromGithub: %+v %v", gb, err)
	}
	e.clk.Advance(3 * time.Second)
	got, err := e.c.GetBuild(ctx, b.BuildID)
	if err != nil || got.Status != cakework.BuildSucceeded || got.ImageID == "" || !got.UpdatedAt.Equal(epoch.Add(3*time.Second)) {
		t.Fatalf("GetBuild after 3s: %+v %v", got, err)
	}
	failed, err := e.c.GetBuild(ctx, gb.BuildID)
	if err != nil || failed.Status != cakework.BuildFailed || failed.ImageID != "" {
		t.Fatalf("GetBuild failed build: %+v %v", failed, err)
	}
	bl, err := e.c.BuildLogs(ctx, gb.BuildID, cakework.LogQuery{})
	if err != nil || len(bl.Lines) < 2 || bl.Lines[len(bl.Lines)-1].Level != "error" {
		t.Fatalf("BuildLogs: %+v %v", bl, err)
	}

	port := 8080
	vm, err := e.c.StartVM(ctx, cakework.StartVMRequest{ImageID: got.ImageID, CPU: 2, Memory: 512, Port: &port, VolumeGB: 3,
		EnvVars: map[string]string{"A": "b"}})
	if err != nil || vm.State != cakework.VMStarted || vm.VolumeGB != 3 || vm.Port == nil || *vm.Port != 8080 ||
		!vm.CreatedAt.Equal(epoch.Add(3*time.Second)) || vm.CreatedAt.Location() != time.UTC {
		t.Fatalf("StartVM: %+v %v", vm, err)
	}
	gv, err := e.c.GetVM(ctx, vm.ID)
	if err != nil || !reflect.DeepEqual(gv, vm) {
		t.Fatalf("GetVM differs from StartVM's answer (different time formats must parse alike):\n%+v\n%+v\n%v", gv, vm, err)
	}
	list, err := e.c.ListVMs(ctx, cakework.ListVMsQuery{ImageID: got.ImageID, Status: cakework.VMStarted})
	if err != nil || len(list.VMs) != 1 || !reflect.DeepEqual(list.VMs[0], vm) || list.Pagination != "" {
		t.Fatalf("ListVMs: %+v %v", list, err)
	}
	e.clk.Advance(5 * time.Second)
	vl, err := e.c.VMLogs(ctx, vm.ID, cakework.LogQuery{})
	if err != nil || len(vl.Lines) < 4 { // two boot lines + a line every 2s
		t.Fatalf("VMLogs: %+v %v", vl, err)
	}
	if err := e.c.StopVM(ctx, vm.ID); err != nil {
		t.Fatalf("StopVM: %v", err)
	}
	if v, _ := e.c.GetVM(ctx, vm.ID); v.State != cakework.VMDestroyed {
		t.Fatalf("stopVM must destroy, state %q", v.State)
	}

	cvm, err := e.c.CacheVM(ctx, cakework.CacheVMRequest{ImageID: got.ImageID, CPU: 1, Memory: 256, DiskSize: 7})
	if err != nil || cvm.State != cakework.VMStopped || cvm.VolumeGB != 7 {
		t.Fatalf("CacheVM (volumeGb spelling): %+v %v", cvm, err)
	}
	if err := e.c.StartCachedVM(ctx, cvm.ID); err != nil {
		t.Fatalf("StartCachedVM: %v", err)
	}
	if v, _ := e.c.GetVM(ctx, cvm.ID); v.State != cakework.VMStarted {
		t.Fatalf("after StartCachedVM: %q", v.State)
	}
	cl, err := e.c.CachedVMLogs(ctx, cvm.ID, cakework.LogQuery{})
	if err != nil || len(cl.Lines) == 0 {
		t.Fatalf("CachedVMLogs: %+v %v", cl, err)
	}
	if err := e.c.StopCachedVM(ctx, cvm.ID); err != nil {
		t.Fatalf("StopCachedVM: %v", err)
	}
	if err := e.c.StopCachedVM(ctx, cvm.ID); !cakework.IsAlreadyStopped(err) {
		t.Fatalf("second StopCachedVM: %v, want already stopped", err)
	}
	if err := e.c.DestroyCachedVM(ctx, cvm.ID); err != nil {
		t.Fatalf("DestroyCachedVM: %v", err)
	}
	if v, _ := e.c.GetVM(ctx, cvm.ID); v.State != cakework.VMDestroyed {
		t.Fatalf("after DestroyCachedVM: %q", v.State)
	}

	e.sim.AppendFunctionBuildLogs("fn-1", cakework.LogLine{Level: "info", Message: "compiling"})
	fl, err := e.c.FunctionBuildLogs(ctx, "fn-1", cakework.LogQuery{})
	if err != nil || len(fl.Lines) != 1 || fl.Lines[0].Message != "compiling" || fl.Lines[0].Time() != epoch.Add(8*time.Second) {
		t.Fatalf("FunctionBuildLogs: %+v %v", fl, err)
	}

	calls := e.sim.Calls()
	for _, r := range cakeworksim.Routes() {
		if calls[r] == 0 {
			t.Errorf("route %s was never called", r)
		}
	}
	if calls[cakeworksim.RouteUnknown] != 0 {
		t.Errorf("client hit %d unknown routes", calls[cakeworksim.RouteUnknown])
	}
}

func TestStopVMConflictIsAlreadyStopped(t *testing.T) {
	e := newEnv(t, cakeworksim.Options{}, cakework.Options{})
	vm := e.sim.AddVM(cakework.VM{State: cakework.VMStopped})
	err := e.c.StopVM(context.Background(), vm.ID)
	var ae *cakework.APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusConflict || !cakework.IsAlreadyStopped(err) || !cakework.IsConflict(err) {
		t.Fatalf("StopVM on a stopped VM: %v", err)
	}
	if cakework.IsRetryable(err) {
		t.Fatal("409 must not be retryable")
	}
	if !strings.Contains(err.Error(), "already stopped") || ae.Message != "VM is already stopped" {
		t.Fatalf("error text %q / message %q", err, ae.Message)
	}
	if err := e.c.StopVM(context.Background(), "nope"); !cakework.IsNotFound(err) || cakework.IsAlreadyStopped(err) {
		t.Fatalf("StopVM on a missing VM: %v", err)
	}
}

func TestErrorBodyShapes(t *testing.T) {
	tests := []struct {
		shape cakeworksim.ErrorShape
		want  string
	}{
		{cakeworksim.ShapeError, "injected failure: Internal Server Error"},
		{cakeworksim.ShapeMessage, "injected failure: Internal Server Error"},
		{cakeworksim.ShapeString, "injected failure: Internal Server Error"},
		{cakeworksim.ShapeEmpty, "Internal Server Error"}, // no body: the status text
	}
	e := newEnv(t, cakeworksim.Options{}, cakework.Options{})
	for _, tc := range tests {
		t.Run(string(tc.shape), func(t *testing.T) {
			e.sim.SetFaults(cakeworksim.Faults{FailNext: 1, ErrorShape: tc.shape})
			_, err := e.c.ListVMs(context.Background(), cakework.ListVMsQuery{})
			var ae *cakework.APIError
			if !errors.As(err, &ae) || ae.Status != 500 || ae.Message != tc.want || !cakework.IsRetryable(err) {
				t.Fatalf("got %#v (%v), want 500 with message %q", ae, err, tc.want)
			}
		})
	}
	// The routes' own shapes, unforced.
	e.sim.ClearFaults()
	ctx := context.Background()
	routeTests := []struct {
		name string
		call func() error
		want string
	}{
		{"getVM {error}", func() error { _, err := e.c.GetVM(ctx, "missing"); return err }, "vm not found"},
		{"getBuild {message}", func() error { _, err := e.c.GetBuild(ctx, "missing"); return err }, "build not found"},
		{"startCachedVM bare string", func() error { return e.c.StartCachedVM(ctx, "missing") }, "cached vm not found"},
		{"startVM 400", func() error { _, err := e.c.StartVM(ctx, cakework.StartVMRequest{CPU: 1}); return err }, "imageId is required"},
	}
	for _, tc := range routeTests {
		t.Run(tc.name, func(t *testing.T) {
			var ae *cakework.APIError
			if err := tc.call(); !errors.As(err, &ae) || ae.Message != tc.want {
				t.Fatalf("got %v, want message %q", err, tc.want)
			}
		})
	}
}

func TestUnauthorizedAndHeaders(t *testing.T) {
	e := newEnv(t, cakeworksim.Options{}, cakework.Options{})
	var mu sync.Mutex
	var seen http.Header
	spy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = r.Header.Clone()
		mu.Unlock()
		e.sim.Handler().ServeHTTP(w, r)
	}))
	defer spy.Close()
	c, err := cakework.New(cakework.Options{BaseURL: spy.URL + "/v1/", APIKey: testKey, Version: "9.9.9"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ListVMs(context.Background(), cakework.ListVMsQuery{}); err != nil {
		t.Fatalf("base URL with /v1/: %v", err)
	}
	mu.Lock()
	if seen.Get("X-Api-Key") != testKey || seen.Get("User-Agent") != "cakework-relay/9.9.9" {
		t.Fatalf("headers: %v", seen)
	}
	mu.Unlock()

	bad, _ := cakework.New(cakework.Options{BaseURL: e.srv.URL, APIKey: "wrong"})
	_, err = bad.ListVMs(context.Background(), cakework.ListVMsQuery{})
	if !cakework.IsUnauthorized(err) || cakework.IsRetryable(err) {
		t.Fatalf("wrong key: %v", err)
	}
	if !strings.Contains(err.Error(), "401") || !strings.Contains(err.Error(), "Unauthorized") {
		t.Fatalf("empty 401 body should give the status text: %v", err)
	}
}

func TestKeyNeverInErrorsOrLogs(t *testing.T) {
	// A server that echoes the key back in every kind of answer.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := r.Header.Get("X-Api-Key")
		switch {
		case strings.HasSuffix(r.URL.Path, "/logs"):
			w.WriteHeader(200)
			fmt.Fprintf(w, `{"lines":[{"timestamp":"%s"}]}`, key) // garbled: key as a time
		default:
			w.WriteHeader(400)
			fmt.Fprintf(w, `{"error":"bad key %s"}`, key)
		}
	}))
	defer srv.Close()
	var logs bytes.Buffer
	var mu sync.Mutex
	logger := slog.New(slog.NewTextHandler(lockedWriter{&mu, &logs}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	c, err := cakework.New(cakework.Options{BaseURL: srv.URL, APIKey: testKey, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	_, err1 := c.GetVM(context.Background(), "x")
	_, err2 := c.VMLogs(context.Background(), "x", cakework.LogQuery{})
	for _, err := range []error{err1, err2} {
		if err == nil || strings.Contains(err.Error(), testKey) {
			t.Fatalf("error leaks the key or is nil: %v", err)
		}
	}
	if !errors.Is(err2, cakework.ErrMalformedResponse) {
		t.Fatalf("bad timestamp should be malformed: %v", err2)
	}
	mu.Lock()
	defer mu.Unlock()
	if logs.Len() == 0 || strings.Contains(logs.String(), testKey) {
		t.Fatalf("logs leak the key (or are empty):\n%s", logs.String())
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func TestGarbledBodiesAreErrors(t *testing.T) {
	e := newEnv(t, cakeworksim.Options{}, cakework.Options{})
	vm := e.sim.AddVM(cakework.VM{})
	ctx := context.Background()
	tests := []struct {
		name   string
		faults cakeworksim.Faults
		call   func() (any, error)
	}{
		{"truncated getVM", cakeworksim.Faults{TruncateNext: 1}, func() (any, error) { return e.c.GetVM(ctx, vm.ID) }},
		{"garbage listVMs", cakeworksim.Faults{GarbageNext: 1}, func() (any, error) { return e.c.ListVMs(ctx, cakework.ListVMsQuery{}) }},
		{"truncated logs", cakeworksim.Faults{TruncateNext: 1}, func() (any, error) { return e.c.VMLogs(ctx, vm.ID, cakework.LogQuery{}) }},
		{"truncated build", cakeworksim.Faults{TruncateNext: 1}, func() (any, error) {
			return e.c.BuildImageFromFiles(ctx, cakework.BuildFromFilesRequest{Dockerfile: "FROM x"})
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e.sim.SetFaults(tc.faults)
			v, err := tc.call()
			if !errors.Is(err, cakework.ErrMalformedResponse) || !cakework.IsRetryable(err) {
				t.Fatalf("want a retryable malformed-response error, got %v", err)
			}
			if !reflect.ValueOf(v).IsZero() {
				t.Fatalf("half-filled result %+v", v)
			}
		})
	}
}

func TestRateLimit429PausesEveryCaller(t *testing.T) {
	e := newEnv(t, cakeworksim.Options{}, cakework.Options{})
	vm := e.sim.AddVM(cakework.VM{})
	ctx := context.Background()
	e.sim.SetFaults(cakeworksim.Faults{RateLimitNext: 1, RetryAfter: 2 * time.Second})
	_, err := e.c.ListVMs(ctx, cakework.ListVMsQuery{})
	var ae *cakework.APIError
	if !errors.As(err, &ae) || ae.Status != 429 || cakework.RetryAfter(err) != 2*time.Second || !cakework.IsRetryable(err) {
		t.Fatalf("first call: %v", err)
	}
	if got := e.c.PausedUntil(); !got.Equal(epoch.Add(2 * time.Second)) {
		t.Fatalf("PausedUntil = %v", got)
	}
	before := e.sim.TotalCalls()

	const callers = 4
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := e.c.GetVM(ctx, vm.ID)
			errs <- err
		}()
	}
	waitWaiters(t, e.clk, callers)
	e.clk.Advance(1999 * time.Millisecond)
	time.Sleep(20 * time.Millisecond) // give a wrongly released caller the chance to hit the server
	if n := e.sim.TotalCalls(); n != before {
		t.Fatalf("%d calls reached the API during the pause", n-before)
	}
	e.clk.Advance(time.Millisecond)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("after the pause: %v", err)
		}
	}
	if n := e.sim.TotalCalls(); n != before+callers {
		t.Fatalf("calls after pause: %d, want %d", n-before, callers)
	}

	// A cancelled caller stops waiting.
	e.sim.SetFaults(cakeworksim.Faults{RateLimitNext: 1, RetryAfter: time.Minute})
	_, _ = e.c.ListVMs(ctx, cakework.ListVMsQuery{})
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { _, err := e.c.GetVM(cctx, vm.ID); done <- err }()
	waitWaiters(t, e.clk, 1)
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) || cakework.IsRetryable(err) {
		t.Fatalf("cancelled wait: %v", err)
	}
}

func waitWaiters(t *testing.T, clk *clock.Fake, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for clk.Waiters() < n {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d callers are waiting", clk.Waiters(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestRateLimiterSharedAcrossCalls(t *testing.T) {
	sim := cakeworksim.New(cakeworksim.Options{APIKey: testKey})
	srv := httptest.NewServer(sim.Handler())
	defer srv.Close()
	c, err := cakework.New(cakework.Options{BaseURL: srv.URL, APIKey: testKey, RateLimit: 25})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	var wg sync.WaitGroup
	for range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := c.ListVMs(context.Background(), cakework.ListVMsQuery{}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	// 6 calls at 25/s with burst 1: the last starts 5*40ms after the first.
	if took := time.Since(start); took < 190*time.Millisecond {
		t.Fatalf("6 calls at 25/s took %v", took)
	}
}

func TestTimeoutIsRetryable(t *testing.T) {
	sim := cakeworksim.New(cakeworksim.Options{APIKey: testKey})
	sim.SetFaults(cakeworksim.Faults{Latency: 2 * time.Second})
	srv := httptest.NewServer(sim.Handler())
	defer srv.Close()
	c, _ := cakework.New(cakework.Options{BaseURL: srv.URL, APIKey: testKey, Timeout: 50 * time.Millisecond})
	_, err := c.ListVMs(context.Background(), cakework.ListVMsQuery{})
	var te *cakework.TransportError
	if !errors.As(err, &te) || !cakework.IsRetryable(err) || !strings.Contains(err.Error(), "timed out") {
		t.Fatalf("timeout: %v", err)
	}
	// Connection refused is retryable too.
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()
	c2, _ := cakework.New(cakework.Options{BaseURL: dead.URL, APIKey: testKey})
	if _, err := c2.GetVM(context.Background(), "x"); !cakework.IsRetryable(err) {
		t.Fatalf("refused: %v", err)
	}
}

func TestNewValidatesBaseURL(t *testing.T) {
	for _, u := range []string{"api.cakework.com", "ftp://x", "http://", "https://x/?a=b", "https://user:pw@x", "::"} {
		if _, err := cakework.New(cakework.Options{BaseURL: u}); err == nil {
			t.Errorf("New(%q) accepted a bad base URL", u)
		} else if strings.Contains(err.Error(), "pw") {
			t.Errorf("error repeats credentials: %v", err)
		}
	}
	c, err := cakework.New(cakework.Options{})
	if err != nil || c.BaseURL() != cakework.DefaultBaseURL {
		t.Fatalf("default base: %v %v", c, err)
	}
}

func TestPageLogsManyPagesSameMillisecond(t *testing.T) {
	e := newEnv(t, cakeworksim.Options{}, cakework.Options{})
	ctx := context.Background()
	vm := e.sim.AddVM(cakework.VM{})
	e.sim.SetVMQuiet(vm.ID, true)
	ts := epoch.Add(-30 * time.Second).Add(123 * time.Millisecond).UnixMilli()
	const n = 1234
	for i := range n {
		e.sim.AppendVMLogs(vm.ID, cakework.LogLine{Timestamp: ts, Level: "info", Message: fmt.Sprintf("line-%04d", i)})
	}
	var got []string
	collect := func(p cakework.LogPage, next cakework.LogQuery) error {
		for _, l := range p.Lines {
			if l.Timestamp != ts {
				t.Fatalf("line time %d, want %d", l.Timestamp, ts)
			}
			got = append(got, l.Message)
		}
		return nil
	}
	q := cakework.LogQuery{From: epoch.Add(-time.Minute), To: epoch, Batch: 50}
	next, pages, err := e.c.PageLogs(ctx, cakework.LogVM, vm.ID, q, 10, collect)
	if err != nil || pages != 10 || !next.Pending() || len(got) != 500 {
		t.Fatalf("first budget: pages=%d lines=%d next=%+v err=%v", pages, len(got), next, err)
	}
	if next.Batch != 50 || next.RawFrom != "2023-03-07 06:11:56 UTC" || next.RawTo != "2023-03-07 06:12:56 UTC" {
		t.Fatalf("resume point must keep the parameters and carry the server's window verbatim: %+v", next)
	}
	// The resume point survives storage (the poller keeps it in bbolt).
	raw, err := json.Marshal(next)
	if err != nil {
		t.Fatal(err)
	}
	var stored cakework.LogQuery
	if err := json.Unmarshal(raw, &stored); err != nil || !reflect.DeepEqual(stored, next) {
		t.Fatalf("resume point does not round-trip: %s -> %+v (%v)", raw, stored, err)
	}
	// Lines arriving in the same millisecond while we were away are not lost.
	for i := n; i < n+10; i++ {
		e.sim.AppendVMLogs(vm.ID, cakework.LogLine{Timestamp: ts, Level: "info", Message: fmt.Sprintf("line-%04d", i)})
	}
	e.clk.Advance(time.Hour) // the window is fixed; time passing changes nothing
	next, pages, err = e.c.PageLogs(ctx, cakework.LogVM, vm.ID, stored, 100, collect)
	if err != nil || next.Pending() || pages != 15 {
		t.Fatalf("drain: pages=%d next=%+v err=%v", pages, next, err)
	}
	if len(got) != n+10 {
		t.Fatalf("got %d lines, want %d", len(got), n+10)
	}
	for i, m := range got {
		if want := fmt.Sprintf("line-%04d", i); m != want {
			t.Fatalf("line %d is %q, want %q (lost, repeated or reordered)", i, m, want)
		}
	}
	if c := e.sim.CallCount(cakeworksim.RouteGetVMLogs); c != 25 {
		t.Fatalf("%d log calls, want 25", c)
	}
}

func TestPageLogsErrorKeepsResumePoint(t *testing.T) {
	e := newEnv(t, cakeworksim.Options{LogBatchMin: 1}, cakework.Options{})
	ctx := context.Background()
	b := e.sim.CreateBuild(cakeworksim.BuildSpec{Manual: true})
	for i := range 5 {
		e.sim.AppendBuildLogs(b.BuildID, cakework.LogLine{Message: fmt.Sprint(i)})
	}
	var got []string
	q := cakework.LogQuery{Batch: 2}
	fnErr := errors.New("disk full")
	calls := 0
	next, pages, err := e.c.PageLogs(ctx, cakework.LogBuild, b.BuildID, q, 10, func(p cakework.LogPage, _ cakework.LogQuery) error {
		calls++
		if calls == 2 {
			return fnErr
		}
		for _, l := range p.Lines {
			got = append(got, l.Message)
		}
		return nil
	})
	if !errors.Is(err, fnErr) || pages != 2 || !next.Pending() {
		t.Fatalf("fn error: pages=%d next=%+v err=%v", pages, next, err)
	}
	// The unconsumed page is read again; an API error keeps the point too.
	e.sim.SetFaults(cakeworksim.Faults{FailNext: 1, ErrorStatus: 503})
	again, _, err := e.c.PageLogs(ctx, cakework.LogBuild, b.BuildID, next, 10, nil)
	if !cakework.IsRetryable(err) || !reflect.DeepEqual(again, next) {
		t.Fatalf("API error: %v, resume %+v want %+v", err, again, next)
	}
	_, _, err = e.c.PageLogs(ctx, cakework.LogBuild, b.BuildID, next, 10, func(p cakework.LogPage, _ cakework.LogQuery) error {
		for _, l := range p.Lines {
			got = append(got, l.Message)
		}
		return nil
	})
	if err != nil || strings.Join(got, ",") != "0,1,2,3,4" {
		t.Fatalf("after resume: %v %v", got, err)
	}
}

func TestPageLogsTokenNeedsItsWindow(t *testing.T) {
	e := newEnv(t, cakeworksim.Options{LogBatchMin: 1}, cakework.Options{})
	ctx := context.Background()
	vm := e.sim.AddVM(cakework.VM{})
	e.sim.SetVMQuiet(vm.ID, true)
	e.sim.AppendVMLogs(vm.ID, cakework.LogLine{Message: "a"}, cakework.LogLine{Message: "b"})
	p, err := e.c.VMLogs(ctx, vm.ID, cakework.LogQuery{Batch: 1})
	if err != nil || p.Pagination == "" || p.From == "" || p.To == "" {
		t.Fatalf("first page: %+v %v", p, err)
	}
	// A token alone is not enough; with a re-formatted but equal window it is.
	if _, err := e.c.VMLogs(ctx, vm.ID, cakework.LogQuery{Batch: 1, Pagination: p.Pagination}); err == nil {
		t.Fatal("a token without from/to was accepted")
	}
	from, _ := cakework.ParseTime(p.From)
	to, _ := cakework.ParseTime(p.To)
	if _, err := e.c.VMLogs(ctx, vm.ID, cakework.LogQuery{Batch: 1, Pagination: p.Pagination, From: from, To: to.Add(time.Second)}); err == nil {
		t.Fatal("a token with another window was accepted")
	}
	p2, err := e.c.VMLogs(ctx, vm.ID, cakework.LogQuery{Batch: 1, Pagination: p.Pagination, From: from, To: to})
	if err != nil || len(p2.Lines) != 1 || p2.Lines[0].Message != "b" {
		t.Fatalf("same window re-formatted: %+v %v", p2, err)
	}
}

func TestListVMsManyPages(t *testing.T) {
	e := newEnv(t, cakeworksim.Options{ListPageSize: 7}, cakework.Options{})
	for i := range 50 {
		e.sim.AddVM(cakework.VM{ID: fmt.Sprintf("vm%02d", i), CreatedAt: epoch.Add(-time.Duration(i%5) * time.Second)})
	}
	seen := map[string]bool{}
	q := cakework.ListVMsQuery{}
	pages := 0
	for {
		l, err := e.c.ListVMs(context.Background(), q)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, v := range l.VMs {
			if seen[v.ID] {
				t.Fatalf("%s listed twice", v.ID)
			}
			seen[v.ID] = true
		}
		if l.Pagination == "" {
			break
		}
		q.Pagination = l.Pagination
	}
	if len(seen) != 50 || pages != 8 {
		t.Fatalf("saw %d VMs in %d pages", len(seen), pages)
	}
	all, err := e.c.ListAllVMs(context.Background(), cakework.ListVMsQuery{}, 8)
	if err != nil || len(all) != 50 {
		t.Fatalf("ListAllVMs: %d VMs, %v", len(all), err)
	}
	if all, err := e.c.ListAllVMs(context.Background(), cakework.ListVMsQuery{}, 7); !errors.Is(err, cakework.ErrIncompleteList) || all != nil {
		t.Fatalf("ListAllVMs over budget: %d VMs, %v", len(all), err)
	}
	// A failure on a later page yields no partial list.
	e.sim.SetFaults(cakeworksim.Faults{After: 2, FailNext: 1, ErrorStatus: 503})
	if all, err := e.c.ListAllVMs(context.Background(), cakework.ListVMsQuery{}, 100); err == nil || all != nil || !cakework.IsRetryable(err) {
		t.Fatalf("ListAllVMs with a failing third page: %d VMs, %v", len(all), err)
	}
	if n := e.sim.CallCount(cakeworksim.RouteListVMs); n != 8+8+7+3 {
		t.Fatalf("listVMs calls: %d", n)
	}
}
