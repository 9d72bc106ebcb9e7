package poller

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cakework-relay/cakework-relay/internal/backoff"
	"github.com/cakework-relay/cakework-relay/internal/bus"
	"github.com/cakework-relay/cakework-relay/internal/cakework"
	"github.com/cakework-relay/cakework-relay/internal/cakework/cakeworksim"
	"github.com/cakework-relay/cakework-relay/internal/clock"
	"github.com/cakework-relay/cakework-relay/internal/event"
	"github.com/cakework-relay/cakework-relay/internal/outbox"
	"github.com/cakework-relay/cakework-relay/internal/state"
)

var epoch = time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)

const testKey = "test-key"

// env is one relay "process" (store, bus, poller) against one simulator.
// crash and reopen emulate kill -9: nothing is drained or stopped cleanly.
type env struct {
	t     *testing.T
	clk   *clock.Fake
	sim   *cakeworksim.Sim
	api   *httptest.Server
	dir   string
	cfg   Config
	store *state.Store
	bus   *bus.Bus
	p     *Poller
	ob    *outbox.Publisher
	// noBus skips NATS for tests that only look at the outbox.
	noBus bool
	// key overrides the API key the poller sends.
	key string
	// logger, when set, is the poller's logger.
	logger *slog.Logger
}

func testConfig() Config {
	return Config{
		VMs:             VMsConfig{},
		Builds:          BuildsConfig{StuckAfter: 30 * time.Minute},
		Logs:            LogsConfig{Batch: 3, MaxPages: 2, VMs: true, Builds: true},
		ShutdownTimeout: 2 * time.Second,
	}
}

func newEnv(t *testing.T, cfg Config, so cakeworksim.Options) *env {
	t.Helper()
	clk := clock.NewFake(epoch)
	so.Clock, so.APIKey = clk, testKey
	if so.LogBatchMin == 0 {
		so.LogBatchMin = 1
	}
	if so.VMLogEvery == 0 {
		so.VMLogEvery = 10000 * time.Hour // VMs log only what a test appends
	}
	if so.BuildDuration == 0 {
		so.BuildDuration = 10000 * time.Hour
	}
	sim := cakeworksim.New(so)
	api := httptest.NewServer(sim.Handler())
	t.Cleanup(api.Close)
	e := &env{t: t, clk: clk, sim: sim, api: api, dir: t.TempDir(), cfg: cfg, key: testKey}
	t.Cleanup(func() { e.close() })
	return e
}

func (e *env) open() *env {
	e.t.Helper()
	var err error
	e.store, err = state.Open(state.Options{Dir: e.dir})
	if err != nil {
		e.t.Fatal(err)
	}
	if !e.noBus {
		e.bus, err = bus.Open(context.Background(), bus.Options{
			StoreDir: filepath.Join(e.dir, "js"), SubjectPrefix: "cakework", Stream: "CAKEWORK",
			DuplicateWindow: time.Hour, MaxAge: time.Hour,
		})
		if err != nil {
			e.t.Fatal(err)
		}
		// The publisher runs on the real clock: its retry sleeps must not
		// wait for the test's fake one.
		e.ob = outbox.New(outbox.Options{Store: e.store, Bus: e.bus})
	}
	o := Options{
		Config:        e.cfg,
		Cakework:      cakework.Options{BaseURL: e.api.URL, APIKey: e.key, Timeout: 5 * time.Second},
		SubjectPrefix: "cakework",
		Store:         StateStore(e.store),
		Clock:         e.clk,
		Backoff:       backoff.Backoff{Initial: time.Second, Max: 4 * time.Second},
		Logger:        e.logger,
	}
	if e.bus != nil {
		o.NATS = e.bus.Conn()
	}
	e.p, err = New(o)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := e.p.Start(context.Background()); err != nil {
		e.t.Fatal(err)
	}
	return e
}

// openSweptVM opens an env without a bus, logging to log (nil: the
// default logger), and sweeps once with one VM, vm-a.
func openSweptVM(t *testing.T, log *slog.Logger) *env {
	t.Helper()
	e := newEnv(t, testConfig(), cakeworksim.Options{})
	e.noBus, e.logger = true, log
	e.open()
	addVMs(e, "vm-a")
	e.mustTick(ScheduleVMs)
	return e
}

// openWithVM1 opens an env whose baseline sweep saw no VM and whose next
// sweep found vm-1, then moves the clock a second on.
func openWithVM1(t *testing.T) *env {
	t.Helper()
	e := newEnv(t, testConfig(), cakeworksim.Options{}).open()
	e.mustTick(ScheduleVMs)
	e.sim.AddVM(cakework.VM{ID: "vm-1"})
	e.mustTick(ScheduleVMs)
	e.clk.Advance(time.Second)
	return e
}

// close shuts down without draining the outbox.
func (e *env) close() {
	if e.p != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		e.p.Stop(ctx)
		cancel()
		e.p = nil
	}
	if e.bus != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		e.bus.Close(ctx)
		cancel()
		e.bus = nil
	}
	if e.store != nil {
		e.store.Close()
		e.store = nil
	}
}

// crash is kill -9 then start again on the same directories.
func (e *env) crash() { e.close(); e.open() }

func (e *env) drain() {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := e.ob.Drain(ctx); err != nil {
		e.t.Fatal(err)
	}
}

// published drains the outbox and returns every event on the stream, in
// stream order, whose short type matches one of the prefixes (all if none).
func (e *env) published(prefixes ...string) []event.Event {
	e.t.Helper()
	e.drain()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	js := e.bus.JetStream()
	st, err := js.Stream(ctx, "CAKEWORK")
	if err != nil {
		e.t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	total := int(info.State.Msgs)
	var out []event.Event
	if total == 0 {
		return out
	}
	cons, err := js.OrderedConsumer(ctx, "CAKEWORK", jetstream.OrderedConsumerConfig{})
	if err != nil {
		e.t.Fatal(err)
	}
	seen := 0
	for seen < total {
		batch, err := cons.Fetch(total-seen, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			e.t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			ev, err := event.Decode(m.Data())
			if err != nil {
				e.t.Fatalf("bad event on the stream: %v", err)
			}
			if m.Headers().Get(jetstream.MsgIDHeader) != ev.ID {
				e.t.Fatalf("Nats-Msg-Id %q != event id %q", m.Headers().Get(jetstream.MsgIDHeader), ev.ID)
			}
			if want := ev.NATSSubject("cakework"); m.Subject() != want {
				e.t.Fatalf("subject %s, want %s", m.Subject(), want)
			}
			keep := len(prefixes) == 0
			for _, p := range prefixes {
				if strings.HasPrefix(ev.ShortType(), p) {
					keep = true
				}
			}
			if keep {
				out = append(out, ev)
			}
		}
		if n == 0 {
			e.t.Fatalf("read %d of %d messages", seen, total)
		}
		seen += n
	}
	return out
}

func (e *env) tick(name string) error {
	e.t.Helper()
	ctx := context.Background()
	switch name {
	case ScheduleVMs:
		return e.p.TickVMs(ctx)
	case ScheduleBuilds:
		return e.p.TickBuilds(ctx)
	}
	return e.p.TickLogs(ctx)
}

func (e *env) mustTick(name string) {
	e.t.Helper()
	if err := e.tick(name); err != nil {
		e.t.Fatalf("%s tick: %v", name, err)
	}
}

// summary renders events as "type subject" lines, sorted, for comparison.
func summary(evs []event.Event) []string {
	out := make([]string, 0, len(evs))
	for _, ev := range evs {
		out = append(out, ev.ShortType()+" "+ev.Subject)
	}
	sort.Strings(out)
	return out
}

// wantVMEvents checks the VM events published so far, as summary renders
// them.
func (e *env) wantVMEvents(want ...string) {
	e.t.Helper()
	if got := summary(e.published("vm.")); !slices.Equal(got, want) {
		e.t.Fatalf("got %v, want %v", got, want)
	}
}

// catchUpVMLog runs the logs schedule n times, 10s apart (past any
// backoff), then checks the log events of VM id carry its whole log, each
// line once and in order.
func (e *env) catchUpVMLog(id string, n int) {
	e.t.Helper()
	for range n {
		e.clk.Advance(10 * time.Second)
		e.mustTick(ScheduleLogs)
	}
	got := logLines(e.t, e.published("vm.log"), id)
	if want := e.truth(cakework.LogVM, id); !slices.Equal(got, want) {
		e.t.Fatalf("got %d lines, want %d", len(got), len(want))
	}
}

func data(t *testing.T, ev event.Event) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(ev.Data, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// wire is a log line as the log events carry it.
type wire struct {
	Time      string `json:"time"`
	Timestamp int64  `json:"timestamp"`
	Level     string `json:"level"`
	Message   string `json:"message"`
}

// logLines concatenates the lines of log events about id, in order.
func logLines(t *testing.T, evs []event.Event, id string) []wire {
	t.Helper()
	var out []wire
	for _, ev := range evs {
		if ev.Action() != "log" || ev.Subject != id {
			continue
		}
		var d struct {
			Lines []wire `json:"lines"`
		}
		if err := json.Unmarshal(ev.Data, &d); err != nil {
			t.Fatal(err)
		}
		if len(d.Lines) == 0 {
			t.Fatalf("log event %s without lines", ev.ID)
		}
		out = append(out, d.Lines...)
	}
	return out
}

// truth reads a whole stream straight from the simulator.
func (e *env) truth(kind cakework.LogKind, id string) []wire {
	e.t.Helper()
	c, err := cakework.New(cakework.Options{BaseURL: e.api.URL, APIKey: testKey})
	if err != nil {
		e.t.Fatal(err)
	}
	var out []wire
	q := cakework.LogQuery{Batch: 1000, To: e.clk.Now().Add(time.Hour)}
	for {
		next, _, err := c.PageLogs(context.Background(), kind, id, q, 100, func(p cakework.LogPage, _ cakework.LogQuery) error {
			for _, l := range p.Lines {
				out = append(out, wire{Time: l.Time().Format("2006-01-02T15:04:05.000Z07:00"), Timestamp: l.Timestamp, Level: l.Level, Message: l.Message})
			}
			return nil
		})
		if err != nil {
			e.t.Fatal(err)
		}
		if !next.Pending() {
			return out
		}
		q = next
	}
}
