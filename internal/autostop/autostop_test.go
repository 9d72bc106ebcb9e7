package autostop

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/cakework"
	"github.com/cakework-relay/cakework-relay/internal/cakework/cakeworksim"
	"github.com/cakework-relay/cakework-relay/internal/clock"
	"github.com/cakework-relay/cakework-relay/internal/event"
	"github.com/cakework-relay/cakework-relay/internal/logtest"
	"github.com/cakework-relay/cakework-relay/internal/state"
)

var t0 = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

// fakePoller is the poller's knowledge, set by the test. Every check, the
// "poller" has just swept and read logs successfully unless told otherwise;
// with manual set, it polls only when the test calls poll.
type fakePoller struct {
	mu  sync.Mutex
	clk *clock.Fake
	vms map[string]*VM
	// logFails marks VMs whose log endpoint is failing.
	logFails map[string]bool
	// backoff marks VMs whose log stream backs off: no call is made, so
	// nothing about their logs changes.
	backoff map[string]bool
	manual  bool
}

func newFakePoller(clk *clock.Fake) *fakePoller {
	return &fakePoller{clk: clk, vms: map[string]*VM{}, logFails: map[string]bool{}, backoff: map[string]bool{}}
}

// poll is one successful VM sweep and one logs pass that reads every log
// to the end, except as logFails and backoff say.
func (f *fakePoller) poll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pollLocked()
}

func (f *fakePoller) pollLocked() {
	now := f.clk.Now()
	for id, v := range f.vms {
		v.LastSweepOK = now
		switch {
		case f.backoff[id]:
		case f.logFails[id]:
			v.LastLogFailed, v.LogFailing = now, true
		default:
			v.LastLogOK = now
			if v.LogFailing {
				v.LogFailing, v.LogRecovered = false, now
			}
		}
	}
}

// forget is the poller's restart: what it knew in memory is gone.
func (f *fakePoller) forget() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, v := range f.vms {
		*v = VM{ID: v.ID, State: v.State, ImageID: v.ImageID, StateSince: v.StateSince,
			WatchedSince: v.WatchedSince, LastLogLine: v.LastLogLine}
	}
}

func (f *fakePoller) VMsInState(st string) ([]VM, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.manual {
		f.pollLocked()
	}
	var out []VM
	for _, v := range f.vms {
		if v.State == st {
			out = append(out, *v)
		}
	}
	return out, nil
}

func (f *fakePoller) log(id string, at time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.vms[id].LastLogLine = at
}

type env struct {
	t     *testing.T
	clk   *clock.Fake
	sim   *cakeworksim.Sim
	src   *fakePoller
	store *state.Store
	dir   string
	as    *AutoStop
	cfg   Config
}

func newEnv(t *testing.T, cfg Config) *env {
	t.Helper()
	clk := clock.NewFake(t0)
	sim := cakeworksim.New(cakeworksim.Options{APIKey: "k", Clock: clk})
	srv := httptest.NewServer(sim.Handler())
	t.Cleanup(srv.Close)
	e := &env{t: t, clk: clk, sim: sim, dir: t.TempDir(), cfg: cfg,
		src: newFakePoller(clk)}
	e.open(srv.URL)
	return e
}

func (e *env) open(url string) {
	e.t.Helper()
	st, err := state.Open(state.Options{Dir: e.dir})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { st.Close() })
	cl, err := cakework.New(cakework.Options{BaseURL: url, APIKey: "k", Clock: e.clk})
	if err != nil {
		e.t.Fatal(err)
	}
	as, err := New(Options{Config: e.cfg, LogsWatched: true, Source: e.src, Stopper: cl, Store: StateStore(st), SubjectPrefix: "cakework", Clock: e.clk})
	if err != nil {
		e.t.Fatal(err)
	}
	e.store, e.as = st, as
}

// restart is a crash and restart: a new store and auto-stopper on the same
// data dir; nothing in memory survives.
func (e *env) restart(url string) {
	e.store.Close()
	e.open(url)
}

func (e *env) startVM(id, image string) {
	e.sim.AddVM(cakework.VM{ID: id, ImageID: image})
	e.src.mu.Lock()
	e.src.vms[id] = &VM{ID: id, State: "started", ImageID: image, StateSince: e.clk.Now(), WatchedSince: e.clk.Now()}
	e.src.mu.Unlock()
}

// run advances the clock in check-sized steps up to d, checking each time.
func (e *env) run(d time.Duration, each func()) {
	e.t.Helper()
	step := 15 * time.Second
	for el := time.Duration(0); el < d; el += step {
		e.clk.Advance(step)
		if each != nil {
			each()
		}
		if err := e.as.Check(context.Background()); err != nil {
			e.t.Fatal(err)
		}
	}
}

// outboxEvents returns the outbox's events of type vm.<action>, in order.
func (e *env) outboxEvents(action string) []event.Event {
	e.t.Helper()
	entries, err := e.store.PeekOutbox(100000)
	if err != nil {
		e.t.Fatal(err)
	}
	var out []event.Event
	for _, en := range entries {
		ev, err := event.Decode(en.Payload)
		if err != nil {
			e.t.Fatal(err)
		}
		if ev.ShortType() == "vm."+action {
			out = append(out, ev)
		}
	}
	return out
}

// events counts the outbox's events of type vm.<action> per VM.
func (e *env) events(action string) map[string]int {
	e.t.Helper()
	out := map[string]int{}
	for _, ev := range e.outboxEvents(action) {
		out[ev.Subject]++
	}
	return out
}

func (e *env) simState(id string) string {
	v, ok := e.sim.VM(id)
	if !ok {
		return "gone"
	}
	return v.State
}

func defaults() Config {
	return Config{Enabled: true, IdleAfter: 30 * time.Minute, WarnBefore: 5 * time.Minute, MaxStopsPerMinute: 5, Check: 15 * time.Second}
}

func TestIdleVMWarnedOnceStoppedOnce(t *testing.T) {
	e := newEnv(t, defaults())
	e.startVM("vm1", "img")
	e.run(24*time.Minute, nil)
	if n := len(e.events("idle")); n != 0 {
		t.Fatal("warned before idle_after - warn_before")
	}
	e.run(2*time.Minute, nil)
	if e.events("idle")["vm1"] != 1 {
		t.Fatalf("warnings: %v", e.events("idle"))
	}
	if e.sim.CallCount(cakeworksim.RouteStopVM) != 0 {
		t.Fatal("stopped at warning time")
	}
	e.run(10*time.Minute, nil)
	if e.events("idle")["vm1"] != 1 || e.events("autostopped")["vm1"] != 1 {
		t.Fatalf("idle %v autostopped %v", e.events("idle"), e.events("autostopped"))
	}
	if got := e.sim.CallCount(cakeworksim.RouteStopVM); got != 1 {
		t.Fatalf("stopVM called %d times", got)
	}
	if s := e.simState("vm1"); s == "started" {
		t.Fatalf("VM still %s", s)
	}
	// The poller still lists it as started for a while: no second stop.
	e.run(time.Hour, nil)
	if got := e.sim.CallCount(cakeworksim.RouteStopVM); got != 1 || e.events("autostopped")["vm1"] != 1 {
		t.Fatalf("stopped again: %d calls", got)
	}
	var data struct {
		IdleSeconds int64 `json:"idleSeconds"`
		DryRun      bool  `json:"dryRun"`
	}
	entries, _ := e.store.PeekOutbox(1000)
	for _, en := range entries {
		ev, _ := event.Decode(en.Payload)
		if ev.ShortType() == "vm.autostopped" {
			json.Unmarshal(ev.Data, &data)
		}
	}
	if data.IdleSeconds < int64((30*time.Minute).Seconds()) || data.DryRun {
		t.Fatalf("autostopped data: %+v", data)
	}
}

func TestSteadyLogsKeepVM(t *testing.T) {
	e := newEnv(t, defaults())
	e.startVM("vm1", "img")
	e.run(2*time.Hour, func() { e.src.log("vm1", e.clk.Now().Add(-time.Second)) })
	if len(e.events("idle"))+len(e.events("autostopped")) != 0 || e.sim.CallCount(cakeworksim.RouteStopVM) != 0 {
		t.Fatal("VM with steady logs was warned or stopped")
	}
}

func TestActivitySignalsKeepVM(t *testing.T) {
	e := newEnv(t, defaults())
	e.startVM("vm1", "img")
	i := 0
	e.run(2*time.Hour, func() {
		i++
		if i%40 == 0 { // every 10 minutes
			if err := e.as.Activity(context.Background(), "vm1"); err != nil {
				t.Fatal(err)
			}
		}
	})
	if len(e.events("idle")) != 0 || e.sim.CallCount(cakeworksim.RouteStopVM) != 0 {
		t.Fatal("VM with activity signals was warned or stopped")
	}
	// Over NATS, the same signal comes as a request body.
	if got := string(e.as.HandleActivity(context.Background(), []byte(`{"id":"vm1"}`))); got != `{"ok":true}` {
		t.Fatalf("reply %s", got)
	}
	if got := string(e.as.HandleActivity(context.Background(), []byte(`{"id":"a.b"}`))); got == `{"ok":true}` {
		t.Fatal("bad id accepted")
	}
}

func TestActivityAfterWarningPreventsStop(t *testing.T) {
	e := newEnv(t, defaults())
	e.startVM("vm1", "img")
	e.run(26*time.Minute, nil)
	if e.events("idle")["vm1"] != 1 {
		t.Fatal("no warning")
	}
	e.src.log("vm1", e.clk.Now())
	e.run(10*time.Minute, nil)
	if e.sim.CallCount(cakeworksim.RouteStopVM) != 0 {
		t.Fatal("stopped a VM that became active after the warning")
	}
}

func TestExcludedImageKept(t *testing.T) {
	cfg := defaults()
	cfg.ExcludeImages = []string{"keep-me"}
	e := newEnv(t, cfg)
	e.startVM("vm1", "keep-me")
	e.run(3*time.Hour, nil)
	if len(e.events("idle")) != 0 || e.sim.CallCount(cakeworksim.RouteStopVM) != 0 {
		t.Fatal("excluded image warned or stopped")
	}
}

func TestFailingLogEndpointKeepsVMUntilRecovered(t *testing.T) {
	e := newEnv(t, defaults())
	e.startVM("vm1", "img")
	e.src.logFails["vm1"] = true
	e.run(3*time.Hour, nil)
	if e.sim.CallCount(cakeworksim.RouteStopVM) != 0 || len(e.events("idle")) != 0 {
		t.Fatal("VM whose logs cannot be read was warned or stopped")
	}
	e.src.mu.Lock()
	e.src.logFails["vm1"] = false
	e.src.mu.Unlock()
	recovered := e.clk.Now()
	e.run(29*time.Minute, nil)
	if e.sim.CallCount(cakeworksim.RouteStopVM) != 0 {
		t.Fatal("stopped before a full idle_after of fresh knowledge")
	}
	e.run(10*time.Minute, nil)
	if e.sim.CallCount(cakeworksim.RouteStopVM) != 1 {
		t.Fatalf("not stopped %v after recovery", e.clk.Now().Sub(recovered))
	}
}

func TestCapHonouredWhen20GoIdle(t *testing.T) {
	cfg := defaults()
	cfg.MaxStopsPerMinute = 5
	e := newEnv(t, cfg)
	for i := 0; i < 20; i++ {
		e.startVM(fmt.Sprintf("vm%02d", i), "img")
	}
	e.run(30*time.Minute+15*time.Second, nil)
	// Check minute by minute: never more than 5 stops in any minute.
	prev := e.sim.CallCount(cakeworksim.RouteStopVM)
	if prev > 5 {
		t.Fatalf("%d stops in the first minute", prev)
	}
	for m := 0; m < 5; m++ {
		e.run(time.Minute, nil)
		now := e.sim.CallCount(cakeworksim.RouteStopVM)
		if now-prev > 5 {
			t.Fatalf("minute %d: %d stops", m, now-prev)
		}
		prev = now
	}
	if prev != 20 || len(e.events("autostopped")) != 20 {
		t.Fatalf("%d stopped in the end, want 20", prev)
	}
}

func TestDryRunCallsNothing(t *testing.T) {
	cfg := defaults()
	cfg.DryRun = true
	e := newEnv(t, cfg)
	e.startVM("vm1", "img")
	e.run(time.Hour, nil)
	if e.sim.TotalCalls() != 0 {
		t.Fatalf("dry run made %d API calls", e.sim.TotalCalls())
	}
	if e.events("idle")["vm1"] != 1 || e.events("autostopped")["vm1"] != 1 {
		t.Fatal("dry run did not emit its events")
	}
	if e.simState("vm1") != "started" {
		t.Fatal("dry run stopped the VM")
	}
}

func TestCachedVMStoppedWithStopCachedVM(t *testing.T) {
	cfg := defaults()
	cfg.CachedVMs = []string{"cvm1"}
	e := newEnv(t, cfg)
	e.sim.AddCachedVM(cakework.VM{ID: "cvm1", ImageID: "img"})
	e.sim.SetVMState("cvm1", "started")
	e.src.vms["cvm1"] = &VM{ID: "cvm1", State: "started", ImageID: "img", StateSince: t0, WatchedSince: t0}
	e.run(40*time.Minute, nil)
	if e.sim.CallCount(cakeworksim.RouteStopCachedVM) != 1 || e.sim.CallCount(cakeworksim.RouteStopVM) != 0 {
		t.Fatalf("stopCachedVM %d, stopVM %d", e.sim.CallCount(cakeworksim.RouteStopCachedVM), e.sim.CallCount(cakeworksim.RouteStopVM))
	}
}

func Test409CountsAsStopped(t *testing.T) {
	e := newEnv(t, defaults())
	e.startVM("vm1", "img")
	e.sim.SetVMState("vm1", "stopped") // stopped upstream; the poller hasn't seen it yet
	e.run(40*time.Minute, nil)
	if e.sim.CallCount(cakeworksim.RouteStopVM) != 1 || e.events("autostopped")["vm1"] != 1 {
		t.Fatalf("calls %d, events %v", e.sim.CallCount(cakeworksim.RouteStopVM), e.events("autostopped"))
	}
	e.run(time.Hour, nil)
	if e.sim.CallCount(cakeworksim.RouteStopVM) != 1 {
		t.Fatal("retried after a 409")
	}
}

func TestRestartKeepsIdleClockAndNeverStopsTwice(t *testing.T) {
	e := newEnv(t, defaults())
	srvURL := func() string {
		srv := httptest.NewServer(e.sim.Handler())
		t.Cleanup(srv.Close)
		return srv.URL
	}()
	e.startVM("vm1", "img")
	e.startVM("vm2", "img")
	e.run(26*time.Minute, nil) // both warned
	if len(e.events("idle")) != 2 {
		t.Fatal("not warned")
	}
	e.restart(srvURL)
	// After the restart the warning is not repeated and the clock was not
	// reset: the stop comes at the original time.
	e.run(5*time.Minute, nil)
	if got := e.sim.CallCount(cakeworksim.RouteStopVM); got != 2 {
		t.Fatalf("after restart: %d stops, want 2", got)
	}
	if e.events("idle")["vm1"] != 1 {
		t.Fatal("warning repeated after restart")
	}
	e.restart(srvURL)
	e.run(time.Hour, nil)
	if got := e.sim.CallCount(cakeworksim.RouteStopVM); got != 2 || e.events("autostopped")["vm1"] != 1 {
		t.Fatalf("stopped twice across restarts: %d calls", got)
	}
}

func TestWarningAlwaysLeadsTheStop(t *testing.T) {
	// The relay was down through the warning window: on its first check it
	// warns, and stops no sooner than warn_before later.
	e := newEnv(t, defaults())
	e.startVM("vm1", "img")
	e.clk.Advance(2 * time.Hour)
	e.run(15*time.Second, nil)
	if e.events("idle")["vm1"] != 1 || e.sim.CallCount(cakeworksim.RouteStopVM) != 0 {
		t.Fatal("stopped without warning first")
	}
	e.run(4*time.Minute+30*time.Second, nil)
	if e.sim.CallCount(cakeworksim.RouteStopVM) != 0 {
		t.Fatal("stopped less than warn_before after the warning")
	}
	e.run(time.Minute, nil)
	if e.sim.CallCount(cakeworksim.RouteStopVM) != 1 {
		t.Fatal("not stopped after warn_before")
	}
}

// hookStopper runs onStop before each real stop call.
type hookStopper struct {
	Stopper
	onStop func(id string)
}

func (h hookStopper) StopVM(ctx context.Context, id string) error {
	h.onStop(id)
	return h.Stopper.StopVM(ctx, id)
}

// signalVMBWhenStoppingVMA replaces e.as with an auto-stopper whose stopVM
// of vmA first records an activity signal for vmB (once), as if it landed
// while a Check was running. The result reports whether it did.
func signalVMBWhenStoppingVMA(t *testing.T, e *env) *bool {
	t.Helper()
	srv := httptest.NewServer(e.sim.Handler())
	t.Cleanup(srv.Close)
	cl, err := cakework.New(cakework.Options{BaseURL: srv.URL, APIKey: "k", Clock: e.clk})
	if err != nil {
		t.Fatal(err)
	}
	signalled := false
	stopper := hookStopper{Stopper: cl, onStop: func(id string) {
		if id == "vmA" && !signalled {
			signalled = true
			if err := e.as.Activity(context.Background(), "vmB"); err != nil {
				t.Error(err)
			}
		}
	}}
	e.as, err = New(Options{Config: e.cfg, LogsWatched: true, Source: e.src, Stopper: stopper, Store: StateStore(e.store), SubjectPrefix: "cakework", Clock: e.clk})
	if err != nil {
		t.Fatal(err)
	}
	return &signalled
}

func TestSignalDuringCheckIsNotOverwritten(t *testing.T) {
	// An activity signal for vmB lands while a Check is running (here: while
	// vmA is being stopped, after Check read the records). The Check must
	// neither overwrite the signal with the record it read earlier nor warn
	// about, let alone stop, vmB on the stale idle clock.
	e := newEnv(t, defaults())
	signalled := signalVMBWhenStoppingVMA(t, e)
	e.startVM("vmA", "img")
	e.run(5*time.Minute, nil)
	e.startVM("vmB", "img") // warned exactly when vmA is stopped
	e.run(25*time.Minute, nil)
	if !*signalled || e.events("autostopped")["vmA"] != 1 {
		t.Fatalf("vmA not stopped at 30m (autostopped %v)", e.events("autostopped"))
	}
	if n := e.events("idle")["vmB"]; n != 0 {
		t.Fatalf("vmB warned %d times right after an activity signal", n)
	}
	e.run(15*time.Minute, nil)
	if e.events("autostopped")["vmB"] != 0 {
		t.Fatal("vmB stopped 15 minutes after an activity signal (idle_after is 30m)")
	}
}

func TestSignalDuringCheckPreventsStop(t *testing.T) {
	// vmA and vmB are due in the same Check; a signal for vmB lands while
	// vmA is being stopped. vmB must be kept.
	e := newEnv(t, defaults())
	signalled := signalVMBWhenStoppingVMA(t, e)
	e.startVM("vmA", "img")
	e.startVM("vmB", "img")
	e.run(30*time.Minute, nil)
	if !*signalled || e.events("autostopped")["vmA"] != 1 {
		t.Fatalf("vmA not stopped at 30m (autostopped %v)", e.events("autostopped"))
	}
	if e.events("autostopped")["vmB"] != 0 || e.simState("vmB") != "started" {
		t.Fatal("vmB stopped although an activity signal arrived before its stop call")
	}
}

func TestCapSurvivesRestart(t *testing.T) {
	cfg := defaults()
	cfg.MaxStopsPerMinute = 2
	e := newEnv(t, cfg)
	srv := httptest.NewServer(e.sim.Handler())
	t.Cleanup(srv.Close)
	for i := 0; i < 6; i++ {
		e.startVM(fmt.Sprintf("vm%d", i), "img")
	}
	e.run(30*time.Minute+15*time.Second, nil)
	first := e.sim.CallCount(cakeworksim.RouteStopVM)
	if first != 2 {
		t.Fatalf("%d stops in the first minute, want 2", first)
	}
	// Restart within the same minute: the budget is spent already.
	e.restart(srv.URL)
	if err := e.as.Check(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := e.sim.CallCount(cakeworksim.RouteStopVM); got != first {
		t.Fatalf("restart reset the cap: %d stops", got)
	}
}

// staleSource wraps the fake poller: after the check's first reading, VM
// "vm-b" logs a line, as if the poller saw it while earlier stops waited.
type staleSource struct {
	*fakePoller
	reads int
}

func (s *staleSource) VMsInState(st string) ([]VM, error) {
	s.reads++
	out, err := s.fakePoller.VMsInState(st)
	if s.reads > 1 {
		for i := range out {
			if out[i].ID == "vm-b" {
				out[i].LastLogLine = s.clk.Now()
			}
		}
	}
	return out, err
}

func TestFreshKnowledgeIsCheckedRightBeforeTheCall(t *testing.T) {
	// Both VMs are warned and due in the same check, but vm-b logs while
	// vm-a's stop is being made.
	e2 := newEnv(t, defaults())
	src := &staleSource{fakePoller: e2.src}
	e2.startVM("vm-a", "img")
	e2.startVM("vm-b", "img")
	e2.clk.Advance(26 * time.Minute)
	if err := e2.as.Check(context.Background()); err != nil { // warnings
		t.Fatal(err)
	}
	e2.as.o.Source = src
	e2.clk.Advance(5 * time.Minute)
	if err := e2.as.Check(context.Background()); err != nil {
		t.Fatal(err)
	}
	if s := e2.simState("vm-a"); s == "started" {
		t.Fatal("vm-a was not stopped")
	}
	if s := e2.simState("vm-b"); s != "started" {
		t.Fatalf("vm-b was stopped (%s) though it logged right before the call", s)
	}
}

func TestUnknownImageKeptWhenImagesAreExcluded(t *testing.T) {
	cfg := defaults()
	cfg.ExcludeImages = []string{"keep-me"}
	e := newEnv(t, cfg)
	e.startVM("vm1", "")
	e.src.vms["vm1"].ImageID = ""
	e.run(2*time.Hour, nil)
	if e.sim.CallCount(cakeworksim.RouteStopVM) != 0 {
		t.Fatal("a VM of unknown image was stopped while exclude_images is set")
	}
}

// refusingStopper fails every stop of one VM.
type refusingStopper struct {
	Stopper
	id    string
	calls *int
}

func (r refusingStopper) StopVM(ctx context.Context, id string) error {
	if id == r.id {
		*r.calls++
		return &cakework.APIError{Status: 500, Op: "stopVM", Method: "POST", Path: "/v1/vms/" + id + "/stop"}
	}
	return r.Stopper.StopVM(ctx, id)
}

// A VM whose stop keeps failing is tried again with backoff, not at every
// evaluation (there is one per poll), so it neither floods the API nor
// uses up the cap that other idle VMs need; the cap is logged once a
// minute, not per VM per evaluation.
func TestFailingStopBacksOffAndDoesNotStarveOthers(t *testing.T) {
	cfg := defaults()
	cfg.MaxStopsPerMinute = 1
	e := newEnv(t, cfg)
	log, rec := logtest.New()
	calls := 0
	srv := httptest.NewServer(e.sim.Handler())
	t.Cleanup(srv.Close)
	cl, err := cakework.New(cakework.Options{BaseURL: srv.URL, APIKey: "k", Clock: e.clk})
	if err != nil {
		t.Fatal(err)
	}
	e.as, err = New(Options{Config: cfg, LogsWatched: true, Source: e.src, Stopper: refusingStopper{Stopper: cl, id: "vmA", calls: &calls},
		Store: StateStore(e.store), SubjectPrefix: "cakework", Clock: e.clk, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"vmA", "vmB", "vmC"} {
		e.startVM(id, "img")
	}
	// Idle, warned, due: then ten minutes evaluated every 2 s.
	for el := time.Duration(0); el < 40*time.Minute; el += 2 * time.Second {
		e.clk.Advance(2 * time.Second)
		_ = e.as.Check(context.Background())
	}
	if calls < 3 || calls > 10 {
		t.Fatalf("stopVM of the refusing VM called %d times in 10 minutes, want a few (backoff)", calls)
	}
	if e.simState("vmB") == "started" || e.simState("vmC") == "started" {
		t.Fatalf("the other idle VMs were starved: vmB %s, vmC %s", e.simState("vmB"), e.simState("vmC"))
	}
	if n := len(rec.Find(slog.LevelWarn, "auto-stop cap reached")); n > 12 {
		t.Fatalf("%d cap warnings in 10 minutes, want at most one a minute", n)
	}
}
