package app

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"testing"
	"time"

	"github.com/slack-go/slack/slacktest"

	"github.com/cakework-relay/cakework-relay/internal/cakework/cakeworksim"
	"github.com/cakework-relay/cakework-relay/internal/cluster/clustertest"
	"github.com/cakework-relay/cakework-relay/internal/config"
)

// shippedConfig is a config file the project ships: the example, and each
// YAML block of the README.
type shippedConfig struct {
	name string
	data []byte
	env  map[string]string
}

func shippedConfigs(t *testing.T) []shippedConfig {
	t.Helper()
	example, err := os.ReadFile("../../config.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// The example validates with an empty environment, as it says.
	out := []shippedConfig{{name: "config.example.yaml", data: example}}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	// The README's configs use these variables; the reader sets them.
	readmeEnv := map[string]string{
		"RELAY_ADMIN_TOKEN":      "admin-token",
		"CAKEWORK_API_KEY":       "test-key",
		"CAKEWORK_WEBHOOK_TOKEN": "webhook-token",
		"SLACK_BOT_TOKEN":        "xoxb-test",
		"CALLBACK_SECRET":        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
	}
	for i, m := range regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllSubmatch(readme, -1) {
		out = append(out, shippedConfig{name: "README.md yaml block " + string(rune('1'+i)), data: m[1], env: readmeEnv})
	}
	if len(out) < 3 {
		t.Fatalf("found %d configs; the README's yaml blocks were not found", len(out))
	}
	return out
}

// Every config the project ships passes check-config and starts under
// serve: the same parse, then the whole app started and ready. Only what
// must be local in a test is changed: the data dir, the listeners, and
// the upstream URLs (the Cakework simulator, a Slack test server).
func TestShippedConfigsStartUnderServe(t *testing.T) {
	for _, sc := range shippedConfigs(t) {
		t.Run(sc.name, func(t *testing.T) {
			env := func(k string) (string, bool) { v, ok := sc.env[k]; return v, ok }
			cfg, err := config.Parse(sc.data, env)
			if err != nil {
				t.Fatalf("check-config refuses it:\n%v", err)
			}
			if cfg.Cluster.Enabled {
				// A fleet member's config: a real 3-node JetStream cluster
				// stands in for the one it names.
				cfg.Bus.URL = clustertest.Start(t, 3).URL()
			}
			cfg.DataDir = t.TempDir()
			cfg.HTTP.Listen = "127.0.0.1:0"
			cfg.Bus.Embedded.Listen = "127.0.0.1:0"
			if cfg.Cakework.APIKey != "" {
				sim := httptest.NewServer(cakeworksim.New(cakeworksim.Options{APIKey: cfg.Cakework.APIKey}).Handler())
				t.Cleanup(sim.Close)
				cfg.Cakework.URL = sim.URL
			}
			slackAPI := slacktest.NewTestServer()
			slackAPI.Start()
			t.Cleanup(slackAPI.Stop)
			for i := range cfg.Sinks.Slack {
				cfg.Sinks.Slack[i].APIURL = slackAPI.GetAPIURL()
				if cfg.Sinks.Slack[i].WebhookURL != "" {
					cfg.Sinks.Slack[i].WebhookURL = slackAPI.GetAPIURL() + "hook"
				}
			}
			a, err := New(Options{Config: cfg})
			if err != nil {
				t.Fatal(err)
			}
			if err := a.Start(context.Background()); err != nil {
				t.Fatalf("serve refuses it: %v", err)
			}
			defer func() {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				if err := a.Stop(ctx); err != nil {
					t.Error(err)
				}
			}()
			// An external bus (a fleet member's) may take a moment: the
			// relay creates its streams in the background while NATS forms.
			wait := time.Duration(0)
			if cfg.Bus.URL != "" {
				wait = 10 * time.Second
			}
			for deadline := time.Now().Add(wait); ; time.Sleep(100 * time.Millisecond) {
				resp, err := http.Get("http://" + a.HTTPAddr() + "/readyz")
				if err != nil {
					t.Fatal(err)
				}
				var body map[string]any
				_ = json.NewDecoder(resp.Body).Decode(&body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("/readyz: %d %v", resp.StatusCode, body)
				}
			}
			// The stream has the duplicate window the config resolves to. A
			// config that leaves it out gets 2m with bus.url (set here in
			// code, as a test or bench does), 30s with the embedded server.
			want := cfg.Bus.Window()
			if cfg.Bus.DuplicateWindow == 0 && cfg.Bus.URL != "" && want != 2*time.Minute {
				t.Errorf("bus.url set and bus.duplicate_window left out: window %s, want 2m", want)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			st, err := a.Core().Bus.JetStream().Stream(ctx, cfg.Bus.Stream)
			if err != nil {
				t.Fatal(err)
			}
			if got := st.CachedInfo().Config.Duplicates; got != want {
				t.Errorf("stream %s duplicate window %s, want %s", cfg.Bus.Stream, got, want)
			}
		})
	}
}
