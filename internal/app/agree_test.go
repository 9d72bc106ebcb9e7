package app

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cakework-relay/cakework-relay/internal/autostop"
	"github.com/cakework-relay/cakework-relay/internal/cakework"
	"github.com/cakework-relay/cakework-relay/internal/config"
	"github.com/cakework-relay/cakework-relay/internal/ingest"
	"github.com/cakework-relay/cakework-relay/internal/poller"
	"github.com/cakework-relay/cakework-relay/internal/sinks/httpcb"
	"github.com/cakework-relay/cakework-relay/internal/sinks/slack"
	"github.com/cakework-relay/cakework-relay/internal/state"
)

// agreeCase is a config file and an environment to check it in, as a
// shipped config is.
type agreeCase = shippedConfig

// agreeCases are every config the project ships (the example and the
// README's blocks) and every file in internal/config/testdata, good and
// bad, each with an empty environment and with the three variables set.
func agreeCases(t *testing.T) []agreeCase {
	t.Helper()
	out := shippedConfigs(t)
	files, err := filepath.Glob("../config/testdata/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	more, _ := filepath.Glob("../config/testdata/*/*.yaml")
	files = append(files, more...)
	if len(more) < 10 {
		t.Fatalf("found %d files in ../config/testdata/{good,bad}", len(more))
	}
	full := map[string]string{
		config.EnvAPIKey:        "test-key",
		config.EnvWebhookSecret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
		config.EnvAdminToken:    "admin-token",
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		name := strings.TrimPrefix(f, "../config/")
		out = append(out, agreeCase{name, data, nil}, agreeCase{name + " with env", data, full})
	}
	return out
}

// buildSections builds what serve builds from each section, with the same
// constructors and options as the components do, starting nothing: the
// sinks, the receivers, the poller (with an API key) and the auto-stopper
// (when enabled). It returns every constructor's error.
func buildSections(t *testing.T, c *config.Config) map[string]error {
	t.Helper()
	st, err := state.Open(state.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	errs := map[string]error{}
	for i, s := range c.Sinks.Slack {
		path := fmt.Sprintf("sinks.slack[%d]", i)
		_, errs[path] = slack.New(s, slack.Options{Store: st, ConfigPath: path})
	}
	for i, h := range c.Sinks.HTTP {
		path := fmt.Sprintf("sinks.http[%d]", i)
		_, errs[path] = httpcb.New(h, httpcb.Options{ConfigPath: path})
	}
	_, errs["ingest"] = ingest.New(ingest.Options{Config: c.Ingest, Store: st})
	if c.Cakework.APIKey != "" {
		_, errs["poller"] = poller.New(poller.Options{Config: c.Poller, Store: poller.StateStore(st),
			Cakework: cakework.Options{BaseURL: c.Cakework.URL, APIKey: c.Cakework.APIKey}})
	}
	if c.Sinks.Autostop.Enabled {
		_, errs["sinks.autostop"] = autostop.New(autostop.Options{Config: c.Sinks.Autostop,
			Source: noVMs{}, Stopper: noStops{}, Store: autostop.StateStore(st)})
	}
	return errs
}

type noVMs struct{}

func (noVMs) VMsInState(string) ([]autostop.VM, error) { return nil, nil }

type noStops struct{}

func (noStops) StopVM(context.Context, string) error       { return nil }
func (noStops) StopCachedVM(context.Context, string) error { return nil }

// crossSection reports the problems that only the whole config can find:
// a sink name used twice or reserved, and auto-stop without an API key. No
// constructor sees them; config.Load, which serve runs first, does.
func crossSection(p config.Problem) bool {
	return strings.Contains(p.Msg, "sink names must be unique") || strings.Contains(p.Msg, "is reserved") ||
		p.Path == "sinks.autostop.enabled"
}

// check-config and serve cannot disagree: for every shipped, good and bad
// config, serve's config.Load gives check-config's verdict and text, a
// config check-config accepts is accepted by every constructor serve calls,
// and each problem check-config finds in a section a constructor owns is
// refused by that constructor in the same words.
func TestCheckConfigAndServeAgree(t *testing.T) {
	for _, ac := range agreeCases(t) {
		t.Run(ac.name, func(t *testing.T) {
			env := func(k string) (string, bool) { v, ok := ac.env[k]; return v, ok }
			_, checkErr := config.Parse(ac.data, env) // what check-config runs

			// serve loads the file with config.Load: the same verdict.
			f := filepath.Join(t.TempDir(), "relay.yaml")
			if err := os.WriteFile(f, ac.data, 0o600); err != nil {
				t.Fatal(err)
			}
			_, serveErr := config.Load(f, env)
			if fmt.Sprint(checkErr) != fmt.Sprint(serveErr) {
				t.Fatalf("check-config says\n%v\nserve says\n%v", checkErr, serveErr)
			}

			c, err := config.Decode(ac.data, env)
			if err != nil {
				if checkErr == nil {
					t.Fatalf("decode refuses what check-config accepts: %v", err)
				}
				return // the file's structure is wrong: nothing to build
			}
			built := buildSections(t, c)
			if checkErr == nil {
				for sec, err := range built {
					if err != nil {
						t.Errorf("check-config accepts it, %s's constructor refuses: %v", sec, err)
					}
				}
				return
			}
			var probs config.Problems
			if !errors.As(checkErr, &probs) {
				t.Fatalf("not Problems: %v", checkErr)
			}
			for _, p := range probs {
				if crossSection(p) {
					continue
				}
				sec := ownerOf(p.Path, built)
				if sec == "" {
					continue // a section config owns, checked by Load alone
				}
				err := built[sec]
				switch {
				case err == nil:
					t.Errorf("check-config refuses it (%s), %s's constructor accepts it", p, sec)
				case sec == "poller":
					// poller.New parses the schedules with ParseSchedule and
					// stops at the first bad one, naming it its own way.
					if !strings.Contains(err.Error(), ".schedule") {
						t.Errorf("poller.New: %v, want it to name the schedule", err)
					}
				case !strings.Contains(err.Error(), p.String()):
					t.Errorf("%s's constructor does not report\n\t%s\nit says\n%v", sec, p, err)
				}
			}
		})
	}
}

// ownerOf is the built section whose constructor checks the key path, or
// "" when none does.
func ownerOf(path string, built map[string]error) string {
	best := ""
	for sec := range built {
		if path == sec || strings.HasPrefix(path, sec+".") || strings.HasPrefix(path, sec+" (") {
			if len(sec) > len(best) {
				best = sec
			}
		}
	}
	if best == "poller" && !strings.HasSuffix(path, ".schedule") {
		return "" // poller.New checks only the schedules; Load the rest
	}
	return best
}
