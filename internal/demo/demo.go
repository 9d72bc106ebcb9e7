// Package demo is `relay demo`: the Cakework simulator running a synthetic
// workload, the relay pointed at it with every part on (signed build
// webhooks, the poller, auto-stop with short timings, an HTTP callback sink
// to a local receiver that refuses every 7th event), embedded NATS, the
// status page (its address and token are printed), and a
// console line per event. It needs no setup and leaves nothing behind
// unless a data dir is given.
package demo

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cakework-relay/cakework-relay/internal/app"
	"github.com/cakework-relay/cakework-relay/internal/cakework/cakeworksim"
	"github.com/cakework-relay/cakework-relay/internal/config"
	"github.com/cakework-relay/cakework-relay/internal/console"
	"github.com/cakework-relay/cakework-relay/internal/event"
)

// Options configure a demo run.
type Options struct {
	// Duration ends the demo; 0 runs until ctx ends.
	Duration time.Duration
	// DataDir keeps the relay's data; empty uses a temp dir removed after.
	DataDir string
	// Out gets the event lines and the guide; Log gets the relay's warnings.
	Out, Log io.Writer
	Version  string
}

// Summary counts the events the console saw, by short type.
type Summary map[string]int

// Types lists the event types seen, sorted.
func (s Summary) Types() []string {
	var out []string
	for t := range s {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

// The simulator and the relay share these; they exist only in this process.
const apiKey = "demo-api-key"

// Run runs the demo until Duration passes or ctx ends.
func Run(ctx context.Context, o Options) (Summary, error) {
	if o.Out == nil {
		o.Out = io.Discard
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	// Say something before anything that waits.
	fmt.Fprintln(o.Out, "cakework-relay demo: starting the Cakework simulator, embedded NATS and the relay...")
	dataDir, cleanup, err := dataDir(o.DataDir)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	httpAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	natsAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	secret, adminToken := newSecret(), "demo-"+strings.TrimRight(base64.RawURLEncoding.EncodeToString(randBytes(12)), "=")

	// The simulator: builds pass and fail, VMs start on their images, log,
	// and some go quiet; finished builds send signed webhooks to the relay.
	sim := cakeworksim.New(cakeworksim.Options{
		APIKey:        apiKey,
		BuildDuration: 2 * time.Second,
		BuildLogEvery: 300 * time.Millisecond,
		VMLogEvery:    700 * time.Millisecond,
		WebhookURL:    "http://" + httpAddr + "/webhooks/cakework",
		WebhookSecret: secret,
		DestroyedTTL:  time.Minute,
	})
	simLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("demo: simulator listen: %w", err)
	}
	simSrv := &http.Server{Handler: sim.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go simSrv.Serve(simLn)
	defer simSrv.Close()
	simURL := "http://" + simLn.Addr().String()

	// A local receiver for the HTTP callback sink. It refuses every 7th
	// delivery, so dead letters show on the status page, ready to replay.
	var deliveries atomic.Int64
	cbLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("demo: callback receiver listen: %w", err)
	}
	cbSrv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		if deliveries.Add(1)%7 == 0 {
			http.Error(w, "the demo receiver refuses every 7th delivery", http.StatusUnprocessableEntity)
		}
	})}
	go cbSrv.Serve(cbLn)
	defer cbSrv.Close()
	callbackURL := "http://" + cbLn.Addr().String() + "/callback"

	cfgPath := filepath.Join(dataDir, "relay-demo.yaml")
	if err := os.WriteFile(cfgPath, []byte(configYAML(dataDir, httpAddr, natsAddr, simURL, secret, callbackURL)), 0o600); err != nil {
		return nil, fmt.Errorf("demo: write config: %w", err)
	}
	env := func(k string) (string, bool) {
		if k == "DEMO_ADMIN_TOKEN" {
			return adminToken, true
		}
		return "", false
	}
	cfg, err := config.Load(cfgPath, env)
	if err != nil {
		return nil, fmt.Errorf("demo: its own config is invalid (a bug): %w", err)
	}
	// Only errors: the console lines are the demo's output, and auto-stop's
	// loud "VM auto-stopped" warnings would repeat them.
	logger := slog.New(slog.NewTextHandler(o.Log, &slog.HandlerOptions{Level: slog.LevelError}))
	a, err := app.New(app.Options{Config: cfg, Logger: logger, Version: o.Version})
	if err != nil {
		return nil, err
	}
	if err := a.Start(ctx); err != nil {
		return nil, err
	}
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := a.Stop(sctx); err != nil {
			fmt.Fprintln(o.Log, "demo: relay stop:", err)
		}
	}
	defer stop()

	fmt.Fprintf(o.Out, "cakework-relay demo: simulator on %s, relay on http://%s\n", simURL, httpAddr)
	fmt.Fprintf(o.Out, "  status page:    http://%s/   sign in with the admin token %s\n", httpAddr, adminToken)
	fmt.Fprintf(o.Out, "  while it runs:  relay tail -server nats://%s    curl http://%s/metrics\n", natsAddr, httpAddr)
	fmt.Fprintf(o.Out, "builds pass and fail, VMs start, log and go idle; auto-stop is on (idle after %s).\n", cfg.Sinks.Autostop.IdleAfter)
	fmt.Fprintf(o.Out, "an HTTP callback sink posts to a local receiver that refuses every 7th event: replay them from the status page.\n\n")

	// The console: an ordered consumer on the stream, one line per event.
	p := console.New(o.Out)
	var mu sync.Mutex
	sum := Summary{}
	cons, err := a.Core().Bus.JetStream().OrderedConsumer(ctx, cfg.Bus.Stream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{cfg.Bus.SubjectPrefix + ".>"},
	})
	if err != nil {
		return nil, fmt.Errorf("demo: console consumer: %w", err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		e, err := event.Decode(m.Data())
		if err != nil {
			return
		}
		mu.Lock()
		sum[e.ShortType()]++
		mu.Unlock()
		p.Print(e)
	})
	if err != nil {
		return nil, fmt.Errorf("demo: console consumer: %w", err)
	}

	runCtx, cancel := context.WithCancel(ctx)
	if o.Duration > 0 {
		runCtx, cancel = context.WithTimeout(ctx, o.Duration)
	}
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); sim.Run(runCtx, 200*time.Millisecond) }()
	go func() {
		defer wg.Done()
		// VMs started before the poller's baseline sweep would be part of
		// the baseline, with no vm.started: start the workload after it.
		if err := waitBaseline(runCtx, a); err != nil {
			if runCtx.Err() == nil {
				fmt.Fprintln(o.Log, "demo:", err)
			}
			return
		}
		sim.RunWorkload(runCtx, cakeworksim.WorkloadOptions{
			BuildEvery: 1500 * time.Millisecond,
			VMEvery:    1500 * time.Millisecond,
			FailRatio:  0.35,
			IdleRatio:  0.5,
			QuietAfter: time.Second,
			MaxVMs:     4,
		})
	}()
	<-runCtx.Done()
	wg.Wait()
	// Let the last events reach the console before the relay stops.
	time.Sleep(300 * time.Millisecond)
	cc.Stop()
	stop()

	mu.Lock()
	defer mu.Unlock()
	parts := make([]string, 0, len(sum))
	for _, t := range sum.Types() {
		parts = append(parts, fmt.Sprintf("%s %d", t, sum[t]))
	}
	fmt.Fprintf(o.Out, "\n%d events: %s\n", total(sum), strings.Join(parts, ", "))
	fmt.Fprint(o.Out, guide(cfgPath, o.DataDir != ""))
	return sum, nil
}

// waitBaseline waits for the poller's first complete VM sweep.
func waitBaseline(ctx context.Context, a *app.App) error {
	p := a.Producers().Poller
	if p == nil {
		return fmt.Errorf("the poller is off (a bug in the demo's config)")
	}
	deadline := time.Now().Add(30 * time.Second)
	for p.Status().Schedules["vms"].LastSuccess.IsZero() {
		if time.Now().After(deadline) {
			return fmt.Errorf("the poller's first VM sweep did not succeed within 30s; starting no workload")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

func total(s Summary) int {
	n := 0
	for _, v := range s {
		n += v
	}
	return n
}

func guide(cfgPath string, kept bool) string {
	cfg := "The config it used (" + cfgPath + ") was in a temporary data dir, now removed;\nrun `relay demo -data DIR` to keep it and the data."
	if kept {
		cfg = "The config it used is " + cfgPath + ";\n`relay serve -config " + cfgPath + "` runs the relay on the same data (with CAKEWORK_API_KEY and a simulator)."
	}
	return `
Where to look next:
  relay tail                 follow a running relay's events (-json for CloudEvents JSON, -since 10m)
  relay serve -config FILE   run it for real: start from config.example.yaml (see README, "A real deployment")
  GET /                      the status page: sign in with http.admin_token (README, "Status page")
  GET /metrics, /readyz      Prometheus metrics (relay_*) and readiness; GET /v1/status with the admin token
  relay simulate             only the Cakework simulator, to point a relay at
` + cfg + "\n"
}

// configYAML is the demo's config: every part on, short timings.
func configYAML(dataDir, httpAddr, natsAddr, simURL, secret, callbackURL string) string {
	return fmt.Sprintf(`# Written by relay demo. Every part of the relay is on, with short timings.
data_dir: %q
log: {level: warn}
http:
  listen: %q
  admin_token: ${DEMO_ADMIN_TOKEN}
cakework:
  url: %q
  api_key: %q
  rate_limit: 100
  timeout: 5s
bus:
  embedded: {listen: %q}
ingest:
  cakework:
    secret: %q
poller:
  vms:    {schedule: "@every 1s"}
  builds: {schedule: "@every 1s"}
  logs:   {schedule: "@every 1s", batch: 100}
sinks:
  autostop:
    enabled: true
    idle_after: 5s
    warn_before: 2s
    max_stops_per_minute: 20
  http:
    - name: demo-callback
      url: %q
      secret: %q
      events: ["build.*", "vm.started", "vm.idle", "vm.autostopped", "vm.stopped"]
`, dataDir, httpAddr, simURL, apiKey, natsAddr, secret, callbackURL, newSecret())
}

func dataDir(dir string) (string, func(), error) {
	if dir != "" {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return "", nil, fmt.Errorf("demo: -data %s: %w", dir, err)
		}
		return dir, func() {}, nil
	}
	tmp, err := os.MkdirTemp("", "relay-demo-")
	if err != nil {
		return "", nil, fmt.Errorf("demo: temp dir: %w", err)
	}
	return tmp, func() { os.RemoveAll(tmp) }, nil
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("demo: find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func newSecret() string { return "whsec_" + base64.StdEncoding.EncodeToString(randBytes(24)) }

func randBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}
