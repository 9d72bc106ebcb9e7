package statuspage_test

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/app"
	"github.com/cakework-relay/cakework-relay/internal/cakework/cakeworksim"
	"github.com/cakework-relay/cakework-relay/internal/config"
)

const (
	adminToken = "page-test-admin-token"
	hookToken  = "page-test-hook-token"
	apiKey     = "page-test-api-key"
)

// relay is a whole relay for the page's tests: the Cakework simulator
// behind its poller, a generic webhook receiver "ci", and an HTTP callback
// sink "hook" for webhook events whose target fails (400: dead-lettered at
// once) until told otherwise.
type relay struct {
	app  *app.App
	base string
	sim  *cakeworksim.Sim
	// fail makes the sink's target answer 400; got counts 2xx deliveries.
	fail atomic.Bool
	got  atomic.Int64
}

type relayOptions struct {
	token  string // admin token; "" turns the page off
	poller bool
	// writeTimeout is http.write_timeout (default 30s).
	writeTimeout time.Duration
}

func startRelay(t *testing.T, o relayOptions) *relay {
	t.Helper()
	r := &relay{}
	r.fail.Store(true)
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		io.Copy(io.Discard, req.Body)
		if r.fail.Load() {
			http.Error(w, "target refuses", http.StatusBadRequest)
			return
		}
		r.got.Add(1)
	}))
	t.Cleanup(target.Close)
	cakeworkURL := "http://127.0.0.1:1" // unused without the poller
	if o.poller {
		r.sim = cakeworksim.New(cakeworksim.Options{APIKey: apiKey, VMLogEvery: time.Hour})
		sim := httptest.NewServer(r.sim.Handler())
		t.Cleanup(sim.Close)
		cakeworkURL = sim.URL
	}
	dir := t.TempDir()
	yaml := fmt.Sprintf(`data_dir: %q
http:
  listen: 127.0.0.1:0
  admin_token: ${ADMIN:-}
  write_timeout: %s
cakework:
  url: %q
  api_key: ${APIKEY:-}
  rate_limit: 100
bus:
  embedded: {listen: ""}
ingest:
  webhooks:
    - {name: ci, token: %q}
poller:
  vms:    {schedule: "@every 1s"}
  builds: {schedule: "@every 1s"}
  logs:   {schedule: "@every 1s"}
sinks:
  http:
    - name: hook
      url: %q
      events: ["webhook.*"]
      retry: {initial: 100ms, max_attempts: 2}
`, filepath.Join(dir, "data"), cmp.Or(o.writeTimeout, 30*time.Second), cakeworkURL, hookToken, target.URL)
	path := filepath.Join(dir, "relay.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"ADMIN": o.token}
	if o.poller {
		env["APIKEY"] = apiKey
	}
	cfg, err := config.Load(path, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	a, err := app.New(app.Options{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := a.Stop(ctx); err != nil {
			t.Error("stop:", err)
		}
	})
	r.app, r.base = a, "http://"+a.HTTPAddr()
	return r
}

// postWebhook posts body to the "ci" receiver.
func (r *relay) postWebhook(t *testing.T, body string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, r.base+"/webhooks/ci", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+hookToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("webhook: %d", resp.StatusCode)
	}
}

// admin GETs an admin route with the bearer token into v.
func (r *relay) admin(t *testing.T, path string, v any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, r.base+path, nil)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %d %s", path, resp.StatusCode, b)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatal(err)
	}
}

// waitFor polls cond every 50 ms for up to d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// deadLetters is GET /v1/dlq's count.
func (r *relay) deadLetters(t *testing.T) int {
	var l struct {
		Count int `json:"count"`
	}
	r.admin(t, "/v1/dlq", &l)
	return l.Count
}
