package slack

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/clock"
	"github.com/cakework-relay/cakework-relay/internal/event"
	"github.com/cakework-relay/cakework-relay/internal/sinks"
	"github.com/cakework-relay/cakework-relay/internal/sinks/sinktest"
	"github.com/cakework-relay/cakework-relay/internal/state"
)

var t0 = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

func openStore(t testing.TB, dir string) *state.Store {
	t.Helper()
	st, err := state.Open(state.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func botConfig(f *fakeSlack) Config {
	return Config{Name: "deploys", Token: testToken, Channel: "#deploys", APIURL: f.APIURL(), Events: []string{"*"}}
}

func newSender(t testing.TB, c Config, st *state.Store, clk clock.Clock, log *slog.Logger) *Sender {
	t.Helper()
	if log == nil {
		log = sinktest.Discard()
	}
	s, err := New(c, Options{Store: st, Clock: clk, Logger: log, ConfigPath: "sinks.slack[0]"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(context.Background()) })
	// The flusher and the token check run from Connect, as under a runner.
	if err := s.Connect(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s
}

func mkEvent(t testing.TB, kind, id, action string, at time.Time, data map[string]any) event.Event {
	t.Helper()
	e, err := event.New(kind, id, action, event.ID(kind, id, action, at.Format(time.RFC3339Nano), fmt.Sprint(data["n"])), at, data)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func logEvent(t testing.TB, id string, at time.Time, from, to int) event.Event {
	var lines []map[string]any
	for i := from; i <= to; i++ {
		ts := at.Add(time.Duration(i) * time.Second)
		lines = append(lines, map[string]any{"time": ts.Format(time.RFC3339), "timestamp": ts.UnixMilli(), "level": "info", "message": fmt.Sprintf("line-%02d", i)})
	}
	return mkEvent(t, "build", id, "log", at, map[string]any{"buildId": id, "lines": lines, "n": from})
}

func buildEvent(t testing.TB, id, status string, at time.Time, extra map[string]any) event.Event {
	d := map[string]any{"buildId": id, "status": status, "createdAt": t0.Format(time.RFC3339), "updatedAt": at.Format(time.RFC3339), "observedBy": "poller"}
	for k, v := range extra {
		d[k] = v
	}
	return mkEvent(t, "build", id, status, at, d)
}

func vmEvent(t testing.TB, id, state string, at time.Time) event.Event {
	return mkEvent(t, "vm", id, state, at, map[string]any{"id": id, "state": state, "hostname": id + ".vm.cakework.dev", "imageId": "img-42", "updatedAt": at.Format(time.RFC3339), "observedBy": "poller"})
}

// runner runs s on the real framework against env.
func runner(t testing.TB, env *sinktest.Env, s *Sender, clk clock.Clock) *sinks.Runner {
	t.Helper()
	o := s.SinkOptions()
	o.Bus, o.Store, o.Clock = env.Bus, env.Store, clk
	o.Retry = sinks.RetryConfig{Initial: time.Second, MaxInterval: time.Minute, MaxAttempts: 5}
	r, err := sinks.NewRunner(s, o)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopRunner(t, r) })
	return r
}

func stopRunner(t testing.TB, r *sinks.Runner) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.Stop(ctx); err != nil {
		t.Error(err)
	}
}

func TestConformanceBot(t *testing.T) {
	sinktest.Run(t, func(t *testing.T, log *slog.Logger) sinktest.Fixture {
		f := newFakeSlack(t, nil)
		c := botConfig(f)
		c.Flood.Threshold = 1000 // the contract counts deliveries one by one
		s := newSender(t, c, openStore(t, t.TempDir()), sinktest.NewStepClock(t0), log)
		return sinktest.Fixture{
			Sender: s, SetMode: f.setMode,
			Delivered: func() int { return len(f.Posts()) + len(f.Updates()) },
			Secrets:   []string{testToken, "s3cr3tT0k3n"},
		}
	})
}

func TestConformanceWebhook(t *testing.T) {
	sinktest.Run(t, func(t *testing.T, log *slog.Logger) sinktest.Fixture {
		f := newFakeSlack(t, nil)
		c := Config{Name: "hook", WebhookURL: f.WebhookURL(), Events: []string{"*"}, Flood: Flood{Threshold: 1000}}
		s := newSender(t, c, openStore(t, t.TempDir()), sinktest.NewStepClock(t0), log)
		return sinktest.Fixture{
			Sender: s, SetMode: f.setMode,
			Delivered: func() int { return len(f.Posts()) },
			Secrets:   []string{f.WebhookURL(), "WeBhOoKsEcReT"},
		}
	})
}

func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	sinktest.Eventually(t, 10*time.Second, what, cond)
}

// A build's lifecycle: one parent message, later events in its thread and
// the parent updated in place, across a restart.
func TestBuildThreadAndUpdateSurviveRestart(t *testing.T) {
	env := sinktest.NewEnv(t)
	clk := sinktest.NewStepClock(t0)
	f := newFakeSlack(t, clk.Now)
	c := botConfig(f)
	c.Events = []string{"build.created", "build.succeeded", "build.failed"}

	s := newSender(t, c, env.Store, clk, nil)
	r := runner(t, env, s, clk)
	env.Publish(t, buildEvent(t, "b-1", "created", t0, map[string]any{"previousStatus": ""}))
	eventually(t, "the parent message", func() bool { return len(f.Posts()) == 1 })
	parent := f.Posts()[0]
	if parent.ThreadTS != "" || !strings.Contains(parent.Text, "Build b-1 is building") {
		t.Fatalf("parent: %+v", parent)
	}

	// Restart: new bus, new store handle, new sender, same files.
	stopRunner(t, r)
	env.Restart(t)
	s2 := newSender(t, c, env.Store, clk, nil)
	runner(t, env, s2, clk)
	done := t0.Add(3*time.Minute + 12*time.Second)
	env.Publish(t, buildEvent(t, "b-1", "succeeded", done, map[string]any{"imageId": "img-7f3a", "previousStatus": "created"}))
	eventually(t, "the reply and the update", func() bool { return len(f.Posts()) == 2 && len(f.Updates()) == 1 })

	reply, upd := f.Posts()[1], f.Updates()[0]
	if reply.ThreadTS != parent.TS || reply.Channel != parent.Channel {
		t.Fatalf("reply not in the parent's thread: reply %+v, parent %+v", reply, parent)
	}
	if upd.TS != parent.TS || upd.Channel != parent.Channel {
		t.Fatalf("update did not target the parent: %+v", upd)
	}
	for _, want := range []string{"Build b-1 succeeded", "img-7f3a", "Duration: 3m12s", "Status: succeeded (was building)"} {
		if !strings.Contains(upd.Text, want) {
			t.Errorf("updated parent lacks %q:\n%s", want, upd.Text)
		}
	}
	if !strings.Contains(string(upd.Blocks), "img-7f3a") {
		t.Errorf("updated blocks lack the image id: %s", upd.Blocks)
	}
}

// A failed build's message carries its last 20 log lines, taken from
// build.log events the user did not subscribe to, across a restart
// between the logs and the failure.
func TestFailedBuildShowsLastLogLines(t *testing.T) {
	env := sinktest.NewEnv(t)
	clk := sinktest.NewStepClock(t0)
	f := newFakeSlack(t, clk.Now)
	c := botConfig(f)
	c.Events = []string{"build.failed"}

	s := newSender(t, c, env.Store, clk, nil)
	r := runner(t, env, s, clk)
	env.Publish(t, logEvent(t, "b-9", t0, 1, 15))
	env.Publish(t, logEvent(t, "b-9", t0.Add(time.Minute), 16, 25))
	eventually(t, "both log batches delivered", func() bool { return r.Status().Delivered == 2 })
	if n := len(f.Posts()); n != 0 {
		t.Fatalf("build.log is not in events, but %d messages were posted", n)
	}

	stopRunner(t, r)
	env.Restart(t)
	s2 := newSender(t, c, env.Store, clk, nil)
	runner(t, env, s2, clk)
	env.Publish(t, buildEvent(t, "b-9", "failed", t0.Add(2*time.Minute), map[string]any{"previousStatus": "created"}))
	eventually(t, "the failure message", func() bool { return len(f.Posts()) == 1 })

	msg := f.Posts()[0]
	if !strings.Contains(msg.Text, "Last 20 log lines") || !strings.Contains(msg.Text, "line-06") || !strings.Contains(msg.Text, "line-25") {
		t.Fatalf("the failure message lacks the last 20 lines:\n%s", msg.Text)
	}
	if strings.Contains(msg.Text, "line-05") {
		t.Fatalf("the failure message has more than the last 20 lines:\n%s", msg.Text)
	}
	if !strings.Contains(string(msg.Blocks), "```") {
		t.Fatalf("the log lines are not in a code block: %s", msg.Blocks)
	}
	// The ring is dropped right after the post, in the same send.
	eventually(t, "the log ring of the finished build dropped", func() bool {
		var ring logRing
		var ok bool
		err := env.Store.View(func(tx *state.Tx) (err error) { ok, err = tx.GetSink(c.Name, ringKey("b-9"), &ring); return err })
		return err == nil && !ok
	})
}

// sendAdvancing runs Send while moving the fake clock along whenever the
// send waits on it (the per-channel limiter).
func sendAdvancing(t testing.TB, s *Sender, clk *clock.Fake, e event.Event) sinks.Result {
	t.Helper()
	done := make(chan sinks.Result, 1)
	go func() { done <- s.Send(context.Background(), e) }()
	for {
		select {
		case r := <-done:
			return r
		case <-time.After(time.Millisecond):
			if clk.Waiters() > 0 {
				clk.Advance(100 * time.Millisecond)
			}
		}
	}
}

// A burst of 50 VM events: 5 posts, then one summary for the other 45,
// posted by the flusher when the window ends, even by a new instance after
// a restart. At most one message per second reaches the channel.
func TestFloodBecomesSummary(t *testing.T) {
	dir := t.TempDir()
	st := openStore(t, dir)
	clk := clock.NewFake(t0)
	f := newFakeSlack(t, clk.Now)
	c := botConfig(f)
	s := newSender(t, c, st, clk, nil)

	for i := range 50 {
		e := vmEvent(t, fmt.Sprintf("vm-%02d", i), "started", clk.Now())
		var r sinks.Result
		if i < 5 {
			r = sendAdvancing(t, s, clk, e)
		} else {
			r = s.Send(context.Background(), e)
		}
		if r.Outcome != sinks.Done {
			t.Fatalf("event %d: %v %v", i, r.Outcome, r.Err)
		}
	}
	posts := f.Posts()
	if len(posts) != 5 {
		t.Fatalf("%d messages posted during the burst, want 5 (then a summary)", len(posts))
	}
	for i := 1; i < len(posts); i++ {
		if gap := posts[i].At.Sub(posts[i-1].At); gap < time.Second {
			t.Errorf("messages %d and %d are %s apart; want at least 1s per channel", i-1, i, gap)
		}
	}
	// Every folded event is on disk before it was acked.
	var p pending
	if err := st.View(func(tx *state.Tx) error { _, err := tx.GetSink(c.Name, floodKey("vm.started"), &p); return err }); err != nil {
		t.Fatal(err)
	}
	if p.Count != 45 {
		t.Fatalf("pending summary holds %d events, want 45", p.Count)
	}

	// A restart before the summary is posted: the new instance posts it.
	s.Close(context.Background())
	s2 := newSender(t, c, st, clk, nil)
	eventually(t, "the flusher waiting for the window to end", func() bool { return clk.Waiters() > 0 })
	clk.Advance(c.Flood.Window + 10*time.Second)
	eventually(t, "the summary", func() bool { return len(f.Posts()) == 6 })
	sum := f.Posts()[5]
	listed := strings.Count(sum.Text, "\n• vm-")
	more := 0
	if i := strings.Index(sum.Text, "…and "); i >= 0 {
		fmt.Sscanf(sum.Text[i:], "…and %d more", &more)
	}
	if sum.ThreadTS != "" || !strings.Contains(sum.Text, "45 × vm.started") || !strings.Contains(sum.Text, "• vm-05 started") || listed+more != 45 {
		t.Fatalf("summary (%d listed + %d more, want 45):\n%s", listed, more, sum.Text)
	}
	eventually(t, "the pending summary cleared", func() bool {
		var ok bool
		_ = st.View(func(tx *state.Tx) (err error) { ok, err = tx.GetSink(c.Name, floodKey("vm.started"), &p); return err })
		return !ok
	})
	_ = s2
}

// A 429 with Retry-After is retried after that delay; nothing is lost or
// dead-lettered.
func TestRateLimitHonoured(t *testing.T) {
	env := sinktest.NewEnv(t)
	clk := sinktest.NewStepClock(t0)
	f := newFakeSlack(t, clk.Now)
	f.retryAfter = 3 * time.Second
	f.script = []sinktest.Mode{sinktest.Throttled, sinktest.Throttled}
	s := newSender(t, botConfig(f), env.Store, clk, nil)
	r := runner(t, env, s, clk)
	for i := 1; i <= 3; i++ {
		env.Publish(t, vmEvent(t, fmt.Sprintf("vm-%d", i), "started", t0.Add(time.Duration(i)*time.Second)))
	}
	eventually(t, "all three delivered", func() bool { return r.Status().Delivered == 3 })
	if n := len(f.Posts()); n != 3 {
		t.Fatalf("%d messages, want 3", n)
	}
	st := r.Status()
	if st.DeadLettered != 0 || st.Retried != 2 {
		t.Fatalf("status %+v: want 2 retries and no dead letters", st)
	}
	n := 0
	for _, w := range clk.Waits() {
		if w == 3*time.Second {
			n++
		}
	}
	if n < 2 {
		t.Fatalf("waits %v: Retry-After 3s not honoured twice", clk.Waits())
	}
}

// Configuration errors go to the DLQ at once, saying what to fix.
func TestPermanentErrorsDeadLetter(t *testing.T) {
	cases := []struct {
		code  string
		want  []string
		ready bool
	}{
		{"channel_not_found", []string{"slack sink deploys", "channel #deploys not found", "check sinks.slack[0].channel and invite the bot"}, true},
		{"not_in_channel", []string{"not in channel #deploys", "/invite"}, true},
		{"is_archived", []string{"archived", "sinks.slack[0].channel"}, true},
		{"invalid_auth", []string{"rejected the bot token", "sinks.slack[0].token"}, false},
		{"token_revoked", []string{"revoked", "sinks.slack[0].token"}, false},
	}
	for _, tc := range cases {
		t.Run(tc.code, func(t *testing.T) {
			env := sinktest.NewEnv(t)
			clk := sinktest.NewStepClock(t0)
			f := newFakeSlack(t, clk.Now)
			f.mode, f.code = sinktest.Permanent, tc.code
			s := newSender(t, botConfig(f), env.Store, clk, nil)
			r := runner(t, env, s, clk)
			env.Publish(t, buildEvent(t, "b-1", "failed", t0, nil))
			eventually(t, "a dead letter", func() bool { return r.Status().DeadLettered == 1 })
			dls, _, err := sinks.ListDLQ(context.Background(), env.Bus, "deploys", 10)
			if err != nil || len(dls) != 1 {
				t.Fatalf("dlq: %v %v", dls, err)
			}
			dl := dls[0]
			for _, w := range tc.want {
				if !strings.Contains(dl.Error, w) {
					t.Errorf("dead letter error %q lacks %q", dl.Error, w)
				}
			}
			if dl.Attempts != 1 {
				t.Errorf("attempts %d: a permanent error is not retried", dl.Attempts)
			}
			if strings.Contains(dl.Error, "s3cr3t") {
				t.Fatal("the token leaked into the dead letter")
			}
			if (s.Ready() == nil) != tc.ready {
				t.Errorf("Ready() = %v", s.Ready())
			}
		})
	}
}

func TestReadyReportsBadToken(t *testing.T) {
	f := newFakeSlack(t, nil)
	f.authCode = "invalid_auth"
	s := newSender(t, botConfig(f), openStore(t, t.TempDir()), sinktest.NewStepClock(t0), nil)
	eventually(t, "readiness to fail", func() bool { return s.Ready() != nil })
	if err := s.Ready().Error(); !strings.Contains(err, "sinks.slack[0].token") || strings.Contains(err, "s3cr3t") {
		t.Fatalf("Ready: %s", err)
	}

	f2 := newFakeSlack(t, nil)
	ok := newSender(t, botConfig(f2), openStore(t, t.TempDir()), sinktest.NewStepClock(t0), nil)
	eventually(t, "auth.test", func() bool { f2.mu.Lock(); defer f2.mu.Unlock(); return f2.authCalls == 1 })
	if err := ok.Ready(); err != nil {
		t.Fatalf("Ready with a good token: %v", err)
	}
}

// Webhook mode: one message per event, no threads, no updates, and the
// failed build still shows its log tail.
func TestWebhookMode(t *testing.T) {
	clk := sinktest.NewStepClock(t0)
	f := newFakeSlack(t, clk.Now)
	c := Config{Name: "hook", WebhookURL: f.WebhookURL(), Events: []string{"build.created", "build.failed", "vm.autostopped"}}
	s := newSender(t, c, openStore(t, t.TempDir()), clk, nil)
	evs := []event.Event{
		buildEvent(t, "b-2", "created", t0, nil),
		logEvent(t, "b-2", t0, 1, 3),
		buildEvent(t, "b-2", "failed", t0.Add(time.Minute), map[string]any{"previousStatus": "created"}),
		mkEvent(t, "vm", "vm-1", "autostopped", t0.Add(2*time.Minute), map[string]any{"idleSince": t0.Format(time.RFC3339), "idleFor": "30m", "dryRun": false}),
	}
	for _, e := range evs {
		if r := s.Send(context.Background(), e); r.Outcome != sinks.Done {
			t.Fatalf("%s: %v %v", e.ShortType(), r.Outcome, r.Err)
		}
	}
	posts := f.Posts()
	if len(posts) != 3 {
		t.Fatalf("%d messages, want 3 (one per subscribed event)", len(posts))
	}
	for _, p := range posts {
		if p.ThreadTS != "" || len(p.Blocks) == 0 || p.Text == "" {
			t.Fatalf("webhook message: %+v", p)
		}
	}
	if len(f.Updates()) != 0 {
		t.Fatal("webhook mode updated a message")
	}
	if !strings.Contains(posts[1].Text, "line-03") || !strings.Contains(posts[1].Text, "Build b-2 failed") {
		t.Fatalf("failure message:\n%s", posts[1].Text)
	}
	if !strings.Contains(posts[2].Text, "was stopped by the relay after 30m idle") {
		t.Fatalf("autostop message:\n%s", posts[2].Text)
	}
}

func TestTemplates(t *testing.T) {
	f := newFakeSlack(t, nil)
	st := openStore(t, t.TempDir())
	for key, text := range map[string]string{
		"build.failed": "{{.Nope}}",
		"vm.idle":      "{{if}}",
	} {
		c := botConfig(f)
		c.Templates = map[string]string{key: text}
		_, err := New(c, Options{Store: st, ConfigPath: "sinks.slack[0]"})
		if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("templates[%q]", key)) {
			t.Errorf("template %q: New error %v, want one naming the key", text, err)
		}
	}

	c := botConfig(f)
	c.Templates = map[string]string{"build.failed": "<!here> {{.Headline}}; runbook: https://wiki.example.com/builds ({{len .LogTail}} lines below)"}
	s := newSender(t, c, st, sinktest.NewStepClock(t0), nil)
	if r := s.Send(context.Background(), buildEvent(t, "b-3", "failed", t0, nil)); r.Outcome != sinks.Done {
		t.Fatal(r.Err)
	}
	posts := f.Posts()
	// A template makes the event its own message, even on the first event.
	if len(posts) != 2 || !strings.Contains(blockText(t, posts[1].Blocks), "<!here> :x: *Build* `b-3` failed; runbook: https://wiki.example.com/builds (0 lines below)") || !strings.HasPrefix(posts[1].Text, "<!here>") {
		t.Fatalf("template not applied: %+v", posts)
	}
}

// Lines that arrive after the failure (the poller drains logs after the
// status) land on the failed card.
func TestLateLogLinesUpdateFailedCard(t *testing.T) {
	clk := clock.NewFake(t0)
	f := newFakeSlack(t, clk.Now)
	c := botConfig(f)
	c.Events = []string{"build.failed"}
	s := newSender(t, c, openStore(t, t.TempDir()), clk, nil)
	if r := s.Send(context.Background(), buildEvent(t, "b-4", "failed", t0, nil)); r.Outcome != sinks.Done {
		t.Fatal(r.Err)
	}
	if r := s.Send(context.Background(), logEvent(t, "b-4", t0, 1, 2)); r.Outcome != sinks.Done {
		t.Fatal(r.Err)
	}
	eventually(t, "the card update", func() bool {
		if clk.Waiters() > 0 {
			clk.Advance(time.Second)
		}
		return len(f.Updates()) == 1
	})
	if u := f.Updates()[0]; !strings.Contains(u.Text, "line-02") || u.TS != f.Posts()[0].TS {
		t.Fatalf("late lines not on the card: %+v", u)
	}
}

func TestSinkOptionsAddBuildLog(t *testing.T) {
	f := newFakeSlack(t, nil)
	c := botConfig(f)
	c.Events = []string{"vm.autostopped"}
	o := newSender(t, c, openStore(t, t.TempDir()), nil, nil).SinkOptions()
	if strings.Join(o.Events, ",") != "vm.autostopped,build.log" || o.Kind != "slack" || o.Name != "deploys" {
		t.Fatalf("options: %+v", o)
	}
	c.Events = []string{"build.*"}
	o = newSender(t, c, openStore(t, t.TempDir()), nil, nil).SinkOptions()
	if strings.Join(o.Events, ",") != "build.*" {
		t.Fatalf("events %v: build.log is already covered", o.Events)
	}
}

// blockText is every text in a Block Kit JSON, one per line.
func blockText(t testing.TB, raw json.RawMessage) string {
	t.Helper()
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("blocks: %v: %s", err, raw)
	}
	var b strings.Builder
	var walk func(v any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			if s, ok := x["text"].(string); ok {
				b.WriteString(s + "\n")
			}
			for _, y := range x {
				walk(y)
			}
		case []any:
			for _, y := range x {
				walk(y)
			}
		}
	}
	walk(v)
	return b.String()
}
