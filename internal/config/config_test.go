package config

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/cakework-relay/cakework-relay/internal/ingest"
	"github.com/cakework-relay/cakework-relay/internal/sinks"
	"github.com/cakework-relay/cakework-relay/internal/sinks/httpcb"
)

// envOf is an environment made of m.
func envOf(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func mustParse(t *testing.T, src string, env map[string]string) *Config {
	t.Helper()
	c, err := Parse([]byte(src), envOf(env))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return c
}

func problemsOf(t *testing.T, err error) Problems {
	t.Helper()
	var ps Problems
	if !errors.As(err, &ps) {
		t.Fatalf("want Problems, got %T: %v", err, err)
	}
	return ps
}

// hasProblem reports whether ps has a problem at path whose message
// contains msg.
func hasProblem(ps Problems, path, msg string) bool {
	for _, p := range ps {
		if p.Path == path && strings.Contains(p.Msg, msg) {
			return true
		}
	}
	return false
}

func TestDefault(t *testing.T) {
	c := Default(envOf(map[string]string{
		"CAKEWORK_API_KEY":        "key",
		"CAKEWORK_WEBHOOK_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
		"RELAY_ADMIN_TOKEN":       "admin",
	}))
	checks := []struct {
		name      string
		got, want any
	}{
		{"data_dir", c.DataDir, "./relay-data"},
		{"log.level", c.Log.Level, "info"},
		{"log.format", c.Log.Format, "text"},
		{"http.listen", c.HTTP.Listen, "127.0.0.1:8080"},
		{"http.max_body_bytes", c.HTTP.MaxBodyBytes, int64(1048576)},
		{"http.read_timeout", c.HTTP.ReadTimeout, 10 * time.Second},
		{"http.write_timeout", c.HTTP.WriteTimeout, 30 * time.Second},
		{"http.admin_token", c.HTTP.AdminToken, "admin"},
		{"cakework.url", c.Cakework.URL, "https://api.cakework.com"},
		{"cakework.api_key", c.Cakework.APIKey, "key"},
		{"cakework.rate_limit", c.Cakework.RateLimit, 10.0},
		{"cakework.timeout", c.Cakework.Timeout, 30 * time.Second},
		{"bus.url", c.Bus.URL, ""},
		{"bus.embedded.listen", c.Bus.Embedded.Listen, "127.0.0.1:4222"},
		{"bus.subject_prefix", c.Bus.SubjectPrefix, "cakework"},
		{"bus.stream", c.Bus.Stream, "CAKEWORK"},
		{"bus.duplicate_window", c.Bus.Window(), 30 * time.Second},
		{"bus.max_age", c.Bus.MaxAge, 168 * time.Hour},
		{"ingest.cakework.secret", c.Ingest.Cakework.Secret, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"},
		{"ingest.cakework.configured", c.Ingest.Cakework.Configured, false},
		{"ingest.outbox_limit", c.Ingest.OutboxLimit, 100000},
		{"ingest.seen_ttl", c.Ingest.SeenTTL, 72 * time.Hour},
		{"ingest.timestamp_tolerance", c.Ingest.TimestampTolerance, 5 * time.Minute},
		{"poller.vms.schedule", c.Poller.VMs.Schedule, "@every 15s"},
		{"poller.builds.schedule", c.Poller.Builds.Schedule, "@every 5s"},
		{"poller.builds.stuck_after", c.Poller.Builds.StuckAfter, 30 * time.Minute},
		{"poller.logs.schedule", c.Poller.Logs.Schedule, "@every 5s"},
		{"poller.logs.batch", c.Poller.Logs.Batch, 500},
		{"poller.logs.max_pages", c.Poller.Logs.MaxPages, 10},
		{"poller.logs.vms", c.Poller.Logs.VMs, true},
		{"poller.logs.builds", c.Poller.Logs.Builds, true},
		{"poller.jitter", c.Poller.Jitter, time.Duration(0)},
		{"poller.shutdown_timeout", c.Poller.ShutdownTimeout, 3 * time.Second},
		{"sinks.autostop.enabled", c.Sinks.Autostop.Enabled, false},
		{"sinks.autostop.idle_after", c.Sinks.Autostop.IdleAfter, 30 * time.Minute},
		{"sinks.autostop.warn_before", c.Sinks.Autostop.WarnBefore, 5 * time.Minute},
		{"sinks.autostop.max_stops_per_minute", c.Sinks.Autostop.MaxStopsPerMinute, 5},
		{"sinks.autostop.check", c.Sinks.Autostop.Check, 15 * time.Second},
	}
	for _, tc := range checks {
		if !reflect.DeepEqual(tc.got, tc.want) {
			t.Errorf("%s = %#v, want %#v", tc.name, tc.got, tc.want)
		}
	}
	if err := c.Validate(); err != nil {
		t.Errorf("Default does not validate:\n%v", err)
	}
	if err := Default(nil).Validate(); err != nil {
		t.Errorf("Default(nil) does not validate:\n%v", err)
	}
}

func TestEmptyFileIsDefault(t *testing.T) {
	env := map[string]string{"CAKEWORK_API_KEY": "k"}
	for _, src := range []string{"", "# only a comment\n", "---\n", "~\n"} {
		c := mustParse(t, src, env)
		if want := Default(envOf(env)); !reflect.DeepEqual(c, want) {
			t.Errorf("Parse(%q) = %+v\nwant Default: %+v", src, c, want)
		}
	}
	c, err := Load("", envOf(env))
	if err != nil || !reflect.DeepEqual(c, Default(envOf(env))) {
		t.Errorf(`Load("") = %+v, %v; want Default`, c, err)
	}
}

func TestFileDefaultsAndEnvFallbacks(t *testing.T) {
	c, err := Load("testdata/minimal.yaml", envOf(map[string]string{"CAKEWORK_API_KEY": "from-env", "RELAY_ADMIN_TOKEN": "adm"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.HTTP.Listen != "127.0.0.1:9090" || c.Bus.Embedded.Listen != DefaultEmbeddedListen || c.DataDir != DefaultDataDir {
		t.Errorf("file values or defaults lost: %+v", c)
	}
	if c.Cakework.APIKey != "from-env" || c.HTTP.AdminToken != "adm" {
		t.Errorf("env fallbacks not applied: api_key %q admin_token %q", c.Cakework.APIKey, c.HTTP.AdminToken)
	}
	a, b := c.Sinks.HTTP[0], c.Sinks.HTTP[1]
	wantA := sinks.RetryConfig{Initial: time.Second, MaxInterval: 10 * time.Minute, MaxAttempts: 12}
	if a.Timeout != 15*time.Second || a.Concurrency != 4 || a.Retry != wantA || !reflect.DeepEqual(a.Events, []string{"*"}) {
		t.Errorf("sinks.http[0] defaults: %+v", a)
	}
	wantB := sinks.RetryConfig{Initial: time.Second, MaxInterval: 10 * time.Minute, MaxAttempts: 3}
	if b.Timeout != 2*time.Second || b.Retry != wantB || !reflect.DeepEqual(b.Events, []string{"*"}) {
		t.Errorf("sinks.http[1] defaults: %+v", b)
	}

	// A value in the file wins over the environment.
	c = mustParse(t, "cakework: {api_key: file}\n", map[string]string{"CAKEWORK_API_KEY": "env"})
	if c.Cakework.APIKey != "file" {
		t.Errorf("api_key = %q, want the file's", c.Cakework.APIKey)
	}
	// The webhook secret falls back only when neither secret nor token is set.
	c = mustParse(t, "ingest: {cakework: {token: tok}}\n", map[string]string{"CAKEWORK_WEBHOOK_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"})
	if c.Ingest.Cakework.Secret != "" || c.Ingest.Cakework.Token != "tok" {
		t.Errorf("cakework receiver = %+v", c.Ingest.Cakework)
	}
}

func TestExpand(t *testing.T) {
	env := envOf(map[string]string{"A": "alpha", "EMPTY": "", "YAML": "{x: 1}"})
	tests := []struct {
		in, want string
		wantErr  bool
	}{
		{in: "plain", want: "plain"},
		{in: "${A}", want: "alpha"},
		{in: "x-${A}-y", want: "x-alpha-y"},
		{in: "${UNSET}", want: ""},
		{in: "${UNSET:-def}", want: "def"},
		{in: "${EMPTY:-def}", want: "def"},
		{in: "${A:-def}", want: "alpha"},
		{in: "${UNSET:-}", want: ""},
		{in: "${UNSET:-a:b/c d}", want: "a:b/c d"},
		{in: "$$", want: "$"},
		{in: "$${A}", want: "${A}"},
		{in: "$$$${A}", want: "$${A}"},
		{in: "pa$word", want: "pa$word"},
		{in: "trailing$", want: "trailing$"},
		{in: "${YAML}", want: "{x: 1}"},
		{in: "${A}${A}", want: "alphaalpha"},
		{in: "${", wantErr: true},
		{in: "${A", wantErr: true},
		{in: "${}", wantErr: true},
		{in: "${1A}", wantErr: true},
		{in: "${A B}", wantErr: true},
		{in: "${A-def}", wantErr: true},
		{in: "${A:-${B}}", wantErr: true},
	}
	for _, tc := range tests {
		got, err := expand(tc.in, env)
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("expand(%q) = %q, %v; want %q, error %v", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestExpansionInFile(t *testing.T) {
	env := map[string]string{
		// Injection attempts: YAML in a value must stay one string.
		"EVIL":  "x\nhttp: {admin_token: pwned}\nlog: {level: debug}",
		"EVIL2": "}, admin_token: pwned, x: {",
		"BATCH": "200",
		"LIM":   "2.5",
		"EMB":   "",
	}
	src := `
data_dir: ${EVIL}
http: {listen: "127.0.0.1:${PORT:-9999}"}
cakework: {api_key: "${EVIL2}", rate_limit: "${LIM}"}
bus: {embedded: {listen: "${EMB}"}}
poller:
  logs:
    batch: ${BATCH}
    vms: ${TAIL_VMS:-false}
  jitter: ${JITTER:-2s}
sinks:
  http:
    - name: a
      url: https://x.example.com/$$path
      headers: {Authorization: "Bearer ${TOKEN:-t0k}"}
`
	c := mustParse(t, src, env)
	if c.DataDir != env["EVIL"] || c.Cakework.APIKey != env["EVIL2"] {
		t.Errorf("env values were not taken literally: data_dir %q api_key %q", c.DataDir, c.Cakework.APIKey)
	}
	if c.HTTP.AdminToken != "" || c.Log.Level != "info" {
		t.Errorf("injection changed other keys: admin_token %q level %q", c.HTTP.AdminToken, c.Log.Level)
	}
	if c.HTTP.Listen != "127.0.0.1:9999" || c.Cakework.RateLimit != 2.5 || c.Poller.Logs.Batch != 200 ||
		c.Poller.Logs.VMs || c.Poller.Jitter != 2*time.Second || c.Bus.Embedded.Listen != "" {
		t.Errorf("typed expansion: %+v %+v %+v", c.HTTP, c.Poller, c.Bus.Embedded)
	}
	h := c.Sinks.HTTP[0]
	if h.URL != "https://x.example.com/$path" || h.Headers["Authorization"] != "Bearer t0k" {
		t.Errorf("sinks.http[0] = %+v", h)
	}

	// Keys are not expanded.
	_, err := Parse([]byte("${KEY}: x\n"), envOf(map[string]string{"KEY": "data_dir"}))
	if ps := problemsOf(t, err); !hasProblem(ps, "${KEY}", "unknown key") {
		t.Errorf("a key was expanded: %v", err)
	}
	// A malformed ${ names the key path.
	_, err = Parse([]byte("sinks: {http: [{name: a, url: 'https://x/${oops'}]}\n"), nil)
	if ps := problemsOf(t, err); !hasProblem(ps, "sinks.http[0].url", `unterminated "${"`) {
		t.Errorf("got %v", err)
	}
}

func TestUnknownKeys(t *testing.T) {
	_, err := Load("testdata/unknown_keys.yaml", nil)
	ps := problemsOf(t, err)
	want := []Problem{
		{Path: "dataa_dir", Msg: `unknown key (did you mean "data_dir"?)`},
		{Path: "http.listn", Msg: `unknown key (did you mean "listen"?)`},
		{Path: "ingest.webhooks[0].hmac.algo", Msg: "unknown key"},
		{Path: "poller.logs.bacth", Msg: `unknown key (did you mean "batch"?)`},
		{Path: "sinks.http[1].urll", Msg: `unknown key (did you mean "url"?)`},
		{Path: "sinks.slack[0].flood.treshold", Msg: `unknown key (did you mean "threshold"?)`},
	}
	for _, w := range want {
		if !hasProblem(ps, w.Path, w.Msg) {
			t.Errorf("missing %q\ngot:\n%v", w.String(), err)
		}
	}
	// sinks.http[1] lost its url to the typo, so validation says so too.
	if !hasProblem(ps, "sinks.http[1].url", "required") {
		t.Errorf("missing sinks.http[1].url: required\ngot:\n%v", err)
	}
	if strings.Contains(err.Error(), "ingest.webhooks[0].hmac.algo: unknown key (did") {
		t.Errorf("suggested a key for a name too different: %v", err)
	}
}

// The acceptance criterion: an unknown key and a bad URL, both named.
func TestEveryProblemAtOnce(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := CheckConfig("testdata/unknown_and_bad_url.yaml", nil, &stdout, &stderr)
	if code != 1 || stderr.Len() != 0 {
		t.Fatalf("exit %d, stderr %q", code, stderr.String())
	}
	out := stdout.String()
	for _, want := range []string{
		"sinks.http[0].urll: unknown key (did you mean \"url\"?)\n",
		"cakework.url: not an absolute URL",
		"sinks.http[0].url: required\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if !strings.Contains(line, ": ") {
			t.Errorf("line %q is not key.path: problem", line)
		}
	}
}

func TestTypeErrors(t *testing.T) {
	tests := []struct {
		src, path, msg string
	}{
		{"poller: {builds: {stuck_after: 5 minutes}}", "poller.builds.stuck_after",
			`"5 minutes" is not a duration; use Go durations like 30s, 5m, 1h`},
		{"poller: {builds: {stuck_after: 30}}", "poller.builds.stuck_after", `"30" is not a duration`},
		{"sinks: {autostop: {idle_after: 1d}}", "sinks.autostop.idle_after", "is not a duration"},
		{"http: {read_timeout: [1s]}", "http.read_timeout", "expected a duration, got a list"},
		{"http: {max_body_bytes: 1MB}", "http.max_body_bytes", `"1MB" is not a whole number`},
		{"http: {max_body_bytes: 1.5}", "http.max_body_bytes", "is not a whole number"},
		{"cakework: {rate_limit: fast}", "cakework.rate_limit", `"fast" is not a number`},
		{"cakework: {rate_limit: .nan}", "cakework.rate_limit", "is not a number"},
		{"poller: {logs: {vms: yes}}", "poller.logs.vms", `"yes" is not a boolean; use true or false`},
		{"poller: {watch_builds: b1}", "poller.watch_builds", "expected a list"},
		{"poller: {watch_builds: [[b1]]}", "poller.watch_builds[0]", "expected a string, got a list"},
		{"sinks: {http: {name: a}}", "sinks.http", "expected a list"},
		{"sinks: {http: [{name: a, url: 'https://a/', headers: [x]}]}", "sinks.http[0].headers", "expected a mapping"},
		{"log: text", "log", `expected a mapping of keys, got "text"`},
		{"log: {level: info, level: debug}", "log.level", "duplicate key"},
		{"? [a]\n: b", "", "keys must be plain strings"},
	}
	for _, tc := range tests {
		_, err := Parse([]byte(tc.src), nil)
		if err == nil {
			t.Errorf("%s: no error", tc.src)
			continue
		}
		if ps := problemsOf(t, err); !hasProblem(ps, tc.path, tc.msg) {
			t.Errorf("%s:\nwant %s: %s\ngot:\n%v", tc.src, tc.path, tc.msg, err)
		}
	}
}

func TestSyntaxErrors(t *testing.T) {
	for _, src := range []string{"log: [", "- a\n- b\n", "a: b\n---\nc: d\n", "\tx: 1"} {
		_, err := Parse([]byte(src), nil)
		if err == nil || strings.Contains(err.Error(), "\n") {
			t.Errorf("Parse(%q) = %v; want one line", src, err)
		}
	}
}

func TestValidate(t *testing.T) {
	const whsec = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	tests := []struct {
		name, src, path, msg string
	}{
		{"level", "log: {level: verbose}", "log.level", `"verbose" is not one of debug, info, warn, error`},
		{"format", "log: {format: xml}", "log.format", "is not one of text, json"},
		{"listen", "http: {listen: 8080}", "http.listen", "is not host:port"},
		{"embedded listen", "bus: {embedded: {listen: 'localhost'}}", "bus.embedded.listen", "is not host:port"},
		{"embedded open", "bus: {embedded: {listen: '0.0.0.0:4222'}}", "bus.embedded.token", "required when"},
		{"embedded all", "bus: {embedded: {listen: ':4222'}}", "bus.embedded.token", "required when"},
		{"bus url", "bus: {url: 'http://nats:4222'}", "bus.url", "scheme must be nats, tls, ws or wss"},
		{"bus urls", "bus: {url: 'nats://a:4222,b'}", "bus.url (server 2)", "not a NATS URL"},
		{"cakework url", "cakework: {url: 'api.cakework.com'}", "cakework.url", "not an absolute URL"},
		{"cakework scheme", "cakework: {url: 'ftp://api.cakework.com'}", "cakework.url", "must be an http or https URL"},
		{"negative duration", "http: {read_timeout: -1s}", "http.read_timeout", "more than 0"},
		{"negative rate", "cakework: {rate_limit: -1}", "cakework.rate_limit", "more than 0"},
		{"prefix wildcard", "bus: {subject_prefix: 'a.*'}", "bus.subject_prefix", "is not a NATS subject prefix"},
		{"prefix space", "bus: {subject_prefix: 'a b'}", "bus.subject_prefix", "is not a NATS subject prefix"},
		{"prefix dot", "bus: {subject_prefix: 'a..b'}", "bus.subject_prefix", "is not a NATS subject prefix"},
		{"stream dot", "bus: {stream: 'A.B'}", "bus.stream", "is not a stream name"},
		{"stream gt", "bus: {stream: 'A>'}", "bus.stream", "is not a stream name"},
		{"dup window", "bus: {duplicate_window: 2h, max_age: 1h}", "bus.duplicate_window", "must not be longer than bus.max_age"},
		{"fleet dup window", "bus: {url: 'nats://n:4222', duplicate_window: 20s}\ncluster: {enabled: true}", "bus.duplicate_window", "must be at least 3x cluster.lease_ttl (30s) in a fleet"},
		{"tls half", "bus: {url: 'tls://n:4222', tls: {cert_file: c.pem}}", "bus.tls", "set both cert_file and key_file"},
		{"cakework no auth", "ingest: {cakework: {}}", "ingest.cakework", "no auth configured"},
		{"cakework null no auth", "ingest: {cakework: }", "ingest.cakework", "no auth configured"},
		{"cakework bad secret", "ingest: {cakework: {secret: abc}}", "ingest.cakework.secret", "not a Standard Webhooks secret"},
		{"receiver no auth", "ingest: {webhooks: [{name: a, token: t}, {name: github}]}", "ingest.webhooks[1] (github)",
			"no auth configured; set secret, token or hmac, or insecure_no_auth: true"},
		{"receiver name", "ingest: {webhooks: [{name: GitHub, token: t}]}", "ingest.webhooks[0].name", "is not a receiver name"},
		{"receiver name empty", "ingest: {webhooks: [{token: t}]}", "ingest.webhooks[0].name", "required"},
		{"receiver dup", "ingest: {webhooks: [{name: a, token: t}, {name: a, token: t}]}", "ingest.webhooks[1].name", `"a" is already used by ingest.webhooks[0]`},
		{"receiver reserved", "ingest: {webhooks: [{name: cakework, token: t}]}", "ingest.webhooks[0].name", "ingest.cakework"},
		{"receiver whsec", "ingest: {webhooks: [{name: a, secret: whsec_%%%}]}", "ingest.webhooks[0].secret", "not a Standard Webhooks secret"},
		{"hmac header", "ingest: {webhooks: [{name: a, hmac: {secret: s}}]}", "ingest.webhooks[0].hmac.header", "required"},
		{"hmac secret", "ingest: {webhooks: [{name: a, hmac: {header: X-Sig}}]}", "ingest.webhooks[0].hmac.secret", "required"},
		{"hmac alg", "ingest: {webhooks: [{name: a, hmac: {header: X-Sig, secret: s, algorithm: md5}}]}", "ingest.webhooks[0].hmac.algorithm", `"md5" is not one of sha256, sha1, sha512`},
		{"outbox", "ingest: {outbox_limit: -5}", "ingest.outbox_limit", "at least 1"},
		{"schedule", "poller: {vms: {schedule: every 5s}}", "poller.vms.schedule", `"every 5s" is not a schedule`},
		{"schedule tz", "poller: {vms: {schedule: 'TZ=Europe/Paris 0 * * * *'}}", "poller.vms.schedule", "UTC"},
		{"batch low", "poller: {logs: {batch: 10}}", "poller.logs.batch", "50 to 1000"},
		{"batch high", "poller: {logs: {batch: 1001}}", "poller.logs.batch", "50 to 1000"},
		{"watch id", "poller: {watch_builds: ['a/b']}", "poller.watch_builds[0]", "is not a build id"},
		{"jitter", "poller: {jitter: -1s}", "poller.jitter", "must not be negative"},
		{"slack neither", "sinks: {slack: [{name: s}]}", "sinks.slack[0] (s)", "set token (a bot token) or webhook_url"},
		{"slack both", "sinks: {slack: [{name: s, token: t, channel: c, webhook_url: 'https://h/'}]}", "sinks.slack[0] (s)", "not both"},
		{"slack channel", "sinks: {slack: [{name: s, token: t}]}", "sinks.slack[0].channel", "required with a bot token"},
		{"slack webhook http", "sinks: {slack: [{name: s, webhook_url: 'http://hooks.slack.com/x'}]}", "sinks.slack[0].webhook_url", "must be https"},
		{"slack api url", "sinks: {slack: [{name: s, token: t, channel: c, api_url: 'slack'}]}", "sinks.slack[0].api_url", "not an absolute URL"},
		{"slack template", "sinks: {slack: [{name: s, token: t, channel: c, templates: {build.failed: '{{.X'}}]}", `sinks.slack[0].templates["build.failed"]`, "not a Go text/template"},
		{"slack template key", "sinks: {slack: [{name: s, token: t, channel: c, templates: {'build failed': 'x'}}]}", `sinks.slack[0].templates["build failed"]`, "short event type"},
		{"events", "sinks: {slack: [{name: s, token: t, channel: c, events: ['build failed', '']}]}", "sinks.slack[0].events[0]", "is not an event filter"},
		{"events empty", "sinks: {slack: [{name: s, token: t, channel: c, events: ['build.*', '']}]}", "sinks.slack[0].events[1]", "is not an event filter"},
		{"sink dup", "sinks: {slack: [{name: x, token: t, channel: c}], http: [{name: x, url: 'https://h/'}]}", "sinks.http[0].name", `"x" is already used by sinks.slack[0]`},
		{"sink name", "sinks: {http: [{name: 'a b', url: 'https://h/'}]}", "sinks.http[0].name", "is not a sink name"},
		{"sink reserved", "sinks: {http: [{name: autostop, url: 'https://h/'}]}", "sinks.http[0].name", "reserved"},
		{"http url", "sinks: {http: [{name: a, url: '/hook'}]}", "sinks.http[0].url", "not an absolute URL"},
		{"http secret", "sinks: {http: [{name: a, url: 'https://h/', secret: 'whsec_'}]}", "sinks.http[0].secret", "not a Standard Webhooks secret"},
		{"http header", "sinks: {http: [{name: a, url: 'https://h/', headers: {'X Y': v}}]}", `sinks.http[0].headers["X Y"]`, "not an HTTP header name"},
		{"retry order", "sinks: {http: [{name: a, url: 'https://h/', retry: {initial: 1h, max_interval: 1m}}]}", "sinks.http[0].retry.initial", "must not be longer than max_interval"},
		{"retry attempts", "sinks: {http: [{name: a, url: 'https://h/', retry: {max_attempts: -1}}]}", "sinks.http[0].retry.max_attempts", "at least 1"},
		{"concurrency", "sinks: {http: [{name: a, url: 'https://h/', concurrency: -2}]}", "sinks.http[0].concurrency", "at least 1"},
		{"autostop warn", "sinks: {autostop: {idle_after: 5m, warn_before: 5m}}", "sinks.autostop.warn_before", "shorter than idle_after"},
		{"autostop stops", "sinks: {autostop: {max_stops_per_minute: -1}}", "sinks.autostop.max_stops_per_minute", "at least 1"},
		{"autostop images", "sinks: {autostop: {exclude_images: ['']}}", "sinks.autostop.exclude_images[0]", "must not be empty"},
		{"autostop cached", "sinks: {autostop: {cached_vms: ['vm 1']}}", "sinks.autostop.cached_vms[0]", "is not a VM id"},
		{"autostop key", "sinks: {autostop: {enabled: true}}", "sinks.autostop.enabled", "needs cakework.api_key"},
		{"autostop check", "sinks: {autostop: {check: -1s}}", "sinks.autostop.check", "the longest auto-stop goes without evaluating idle clocks"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.src), nil)
			if err == nil {
				t.Fatalf("no error for %s", tc.src)
			}
			if ps := problemsOf(t, err); !hasProblem(ps, tc.path, tc.msg) {
				t.Errorf("want %s: ...%s...\ngot:\n%v", tc.path, tc.msg, err)
			}
		})
	}

	// And the things that are allowed.
	ok := []string{
		"bus: {embedded: {listen: ''}}",
		"bus: {embedded: {listen: 'localhost:0'}}",
		"bus: {embedded: {listen: '[::1]:4222'}}",
		"bus: {embedded: {listen: '0.0.0.0:4222', token: t}}",
		"bus: {url: 'nats://u:p@a:4222, tls://b:4222,ws://c:80,wss://d'}",
		"bus: {subject_prefix: acme.cakework-relay_1}",
		"ingest: {cakework: {insecure_no_auth: true}}",
		"ingest: {cakework: {token: t}, webhooks: [{name: open, insecure_no_auth: true}, {name: sw, secret: " + whsec + "}]}",
		"poller: {vms: {schedule: '*/10 * * * * *'}, builds: {schedule: '0 */5 * * *'}, logs: {schedule: '@hourly'}}",
		"poller: {watch_builds: [b_1, B-2]}",
		"sinks: {slack: [{name: s, webhook_url: 'http://127.0.0.1:9/x'}, {name: t, token: x, channel: c, api_url: 'http://slack-proxy:8080/api/'}]}",
		"sinks: {slack: [{name: s, token: t, channel: c, templates: {vm.*: '{{.Type}} {{range .Data.lines}}{{.message}}{{end}}'}}]}",
		"sinks: {http: [{name: A_b-1, url: 'http://localhost:9/x', events: ['build.*', vm.autostopped, webhook.github, '*']}]}",
		"sinks: {autostop: {enabled: true, dry_run: true, cached_vms: [vm1]}}\ncakework: {api_key: k}",
	}
	for _, src := range ok {
		if _, err := Parse([]byte(src), nil); err != nil {
			t.Errorf("%s:\n%v", src, err)
		}
	}
}

func TestConfigured(t *testing.T) {
	tests := []struct {
		src  string
		want bool
	}{
		{"", false},
		{"ingest: {outbox_limit: 5}", false},
		{"ingest: {cakework: {token: t}}", true},
		{"ingest: {cakework: {insecure_no_auth: true}}", true},
	}
	for _, tc := range tests {
		c := mustParse(t, tc.src, nil)
		if c.Ingest.Cakework.Configured != tc.want {
			t.Errorf("%q: Configured = %v, want %v", tc.src, c.Ingest.Cakework.Configured, tc.want)
		}
	}
	// Not configured, with the secret from the environment: on, and valid.
	c := mustParse(t, "", map[string]string{EnvWebhookSecret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"})
	if c.Ingest.Cakework.Configured || c.Ingest.Cakework.Secret == "" {
		t.Errorf("cakework receiver = %+v", c.Ingest.Cakework)
	}
	// A bad secret in the environment is reported with where it came from.
	_, err := Parse(nil, envOf(map[string]string{EnvWebhookSecret: "nope"}))
	if ps := problemsOf(t, err); !hasProblem(ps, "ingest.cakework.secret", EnvWebhookSecret) {
		t.Errorf("got %v", err)
	}
}

func TestBoolsDefaultingToTrue(t *testing.T) {
	c := mustParse(t, "poller: {logs: {batch: 100}}", nil)
	if !c.Poller.Logs.VMs || !c.Poller.Logs.Builds {
		t.Errorf("omitted: vms %v builds %v, want true", c.Poller.Logs.VMs, c.Poller.Logs.Builds)
	}
	c = mustParse(t, "poller: {logs: {vms: , builds: null}}", nil)
	if !c.Poller.Logs.VMs || !c.Poller.Logs.Builds {
		t.Errorf("null: vms %v builds %v, want true", c.Poller.Logs.VMs, c.Poller.Logs.Builds)
	}
	c, err := Load("testdata/bools_off.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Poller.Logs.VMs || c.Poller.Logs.Builds {
		t.Errorf("false: vms %v builds %v, want false", c.Poller.Logs.VMs, c.Poller.Logs.Builds)
	}
	c, err = Load("testdata/bools_off.yaml", envOf(map[string]string{"TAIL_BUILDS": "true"}))
	if err != nil || !c.Poller.Logs.Builds {
		t.Errorf("from env: %v %v", c, err)
	}
}

func TestAnchorsAndMerge(t *testing.T) {
	c, err := Load("testdata/anchors.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	a, b := c.Sinks.HTTP[0].Retry, c.Sinks.HTTP[1].Retry
	if a != (sinks.RetryConfig{Initial: 100 * time.Millisecond, MaxInterval: 2 * time.Second, MaxAttempts: 3}) || b != (sinks.RetryConfig{Initial: 100 * time.Millisecond, MaxInterval: 2 * time.Second, MaxAttempts: 5}) {
		t.Errorf("retries: %+v %+v", a, b)
	}
	// Unknown keys inside a merged mapping are still found.
	_, err = Parse([]byte("x: &r {initiall: 1s}\n"), nil)
	if err == nil {
		t.Fatal("no error")
	}
	_, err = Parse([]byte("sinks: {http: [{name: a, url: 'https://h/', retry: {<<: {initiall: 1s}}}]}"), nil)
	if ps := problemsOf(t, err); !hasProblem(ps, "sinks.http[0].retry.initiall", "unknown key") {
		t.Errorf("got %v", err)
	}
}

// Secrets must never appear in any error, whatever is wrong with them.
func TestSecretsNeverLeak(t *testing.T) {
	data, err := os.ReadFile("testdata/secrets_leak.yaml")
	if err != nil {
		t.Fatal(err)
	}
	_, err = Parse(data, nil)
	if err == nil {
		t.Fatal("no error")
	}
	text := err.Error()
	if strings.Contains(text, "LEAK") {
		t.Errorf("a secret leaked into the error:\n%s", text)
	}
	// The problems are there, only without the values.
	ps := problemsOf(t, err)
	for _, path := range []string{
		"http.admin_token", "cakework.api_key", "bus.url (server 2)", "bus.embedded.token",
		"ingest.cakework.secret", "ingest.cakework.token", "ingest.webhooks[0].secret",
		"ingest.webhooks[0].token", "ingest.webhooks[0].hmac.secret", "sinks.slack[0].webhook_url",
		"sinks.slack[0] (s)", "sinks.http[0].url", "sinks.http[0].secret",
		`sinks.http[0].headers["Authorization"]`, `sinks.http[0].headers["Bad Header"]`,
	} {
		if !hasProblem(ps, path, "") {
			t.Errorf("no problem reported at %s", path)
		}
	}

	// A valid config full of secrets: Summary and Redacted show none.
	secrets := map[string]string{
		"S1": "LEAK-admin", "S2": "LEAK-key", "S3": "LEAK-embedded", "S4": "whsec_TEVBSy1jYWtld29yaw==",
		"S5": "LEAK-rtoken", "S6": "LEAK-hmac", "S7": "LEAK-slack", "S8": "whsec_TEVBSy1odHRwLXNlY3JldA==", "S9": "LEAK-hdr",
	}
	src := `
http: {admin_token: "${S1}"}
cakework: {api_key: "${S2}"}
bus: {url: "nats://LEAK-user:LEAK-pass@nats.example.com:4222", embedded: {token: "${S3}"}}
ingest:
  cakework: {secret: "${S4}", token: LEAK-cwtoken}
  webhooks: [{name: a, token: "${S5}", hmac: {header: X-Sig, secret: "${S6}"}}]
sinks:
  slack: [{name: s, token: "${S7}", channel: c}, {name: w, webhook_url: "https://hooks.slack.com/LEAK"}]
  http: [{name: h, url: "https://h.example.com/", secret: "${S8}", headers: {Authorization: "${S9}"}}]
`
	c := mustParse(t, src, secrets)
	if s := c.Summary(); strings.Contains(s, "LEAK") {
		t.Errorf("Summary leaks: %s", s)
	}
	r := c.Redacted()
	out, err := yaml.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range secrets {
		if strings.Contains(string(out), v) {
			t.Errorf("Redacted() still holds %q:\n%s", v, out)
		}
	}
	if c.Cakework.APIKey != "LEAK-key" || c.Sinks.HTTP[0].Headers["Authorization"] != "LEAK-hdr" {
		t.Error("Redacted changed the original")
	}
	if r.Cakework.APIKey != "REDACTED" || r.Bus.Embedded.Token != "REDACTED" || r.Ingest.Webhooks[0].HMAC.Secret != "REDACTED" ||
		r.Sinks.HTTP[0].Headers["Authorization"] != "REDACTED" || r.HTTP.Listen != c.HTTP.Listen {
		t.Errorf("Redacted() = %+v", r)
	}
	if Default(nil).Redacted().HTTP.AdminToken != "" {
		t.Error("an empty secret became REDACTED")
	}
}

func TestExampleConfig(t *testing.T) {
	const path = "../../config.example.yaml"
	var stdout, stderr bytes.Buffer
	if code := CheckConfig(path, envOf(nil), &stdout, &stderr); code != 0 {
		t.Fatalf("check-config %s: exit %d\n%s", path, code, stderr.String())
	}
	if !strings.HasPrefix(stdout.String(), "config OK: ") {
		t.Errorf("summary = %q", stdout.String())
	}

	// Every key of Config appears in the example.
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		t.Fatal(err)
	}
	for _, missing := range missingKeys(reflect.TypeOf(Config{}), []*yaml.Node{root.Content[0]}, "") {
		t.Errorf("config.example.yaml lacks %s", missing)
	}

	// Every default in the example matches the code's.
	c, err := Load(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	d := Default(nil)
	c.Ingest, d.Ingest = ingest.Config{}, ingest.Config{}
	c.Sinks.Slack, c.Sinks.HTTP = nil, nil
	// bus.duplicate_window stays unset in Default (its default follows
	// bus.url): the example's value is the one it resolves to.
	if cw, dw := c.Bus.Window(), d.Bus.Window(); cw != dw {
		t.Errorf("example bus.duplicate_window %s, default %s", cw, dw)
	}
	c.Bus.DuplicateWindow, d.Bus.DuplicateWindow = 0, 0
	if !reflect.DeepEqual(c, d) {
		t.Errorf("example defaults differ from Default:\n%+v\n%+v", c, d)
	}
}

// missingKeys lists the keys of t that none of the mapping nodes has.
func missingKeys(t reflect.Type, nodes []*yaml.Node, path string) []string {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct || t == durationType {
		return nil
	}
	var out []string
	for name, f := range fieldsOf(t) {
		var children []*yaml.Node
		found := false
		for _, n := range nodes {
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == name {
					found = true
					v := n.Content[i+1]
					if v.Kind == yaml.SequenceNode {
						children = append(children, v.Content...)
					} else {
						children = append(children, v)
					}
				}
			}
		}
		p := joinPath(path, name)
		if !found {
			out = append(out, p)
			continue
		}
		out = append(out, missingKeys(t.Field(f.index).Type, children, p)...)
	}
	return out
}

func TestCheckConfig(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	if err := os.WriteFile(good, []byte("sinks: {http: [{name: a, url: 'https://a/'}]}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		path           string
		code           int
		stdout, stderr string
	}{
		{good, 0, "config OK: embedded NATS on 127.0.0.1:4222, HTTP on 127.0.0.1:8080, poller on (3 schedules), 0 receiver(s), sinks: 0 slack, 1 http, autostop off\n", ""},
		{filepath.Join(dir, "missing.yaml"), 1, "", "cannot read config file " + filepath.Join(dir, "missing.yaml") + ": no such file or directory\n"},
		{dir, 1, "", "cannot read config file " + dir + ": is a directory\n"},
	}
	for _, tc := range tests {
		var stdout, stderr bytes.Buffer
		code := CheckConfig(tc.path, envOf(map[string]string{EnvAPIKey: "k"}), &stdout, &stderr)
		if code != tc.code || stdout.String() != tc.stdout || stderr.String() != tc.stderr {
			t.Errorf("CheckConfig(%s) = %d\nstdout %q\nstderr %q\nwant %d %q %q", tc.path, code, stdout.String(), stderr.String(), tc.code, tc.stdout, tc.stderr)
		}
	}
	_, err := Load(filepath.Join(dir, "missing.yaml"), nil)
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load of a missing file: %v is not ErrNotExist", err)
	}
}

func TestSummary(t *testing.T) {
	tests := []struct {
		src  string
		env  map[string]string
		want string
	}{
		{"", nil, "config OK: embedded NATS on 127.0.0.1:4222, HTTP on 127.0.0.1:8080, poller off (no cakework.api_key or CAKEWORK_API_KEY), 0 receiver(s), sinks: 0 slack, 0 http, autostop off"},
		{"bus: {url: 'nats://u:p@a:4222,nats://b:4222'}\ningest: {cakework: {token: t}, webhooks: [{name: g, token: t}]}\nsinks: {autostop: {enabled: true, dry_run: true}}",
			map[string]string{EnvAPIKey: "k"},
			"config OK: external NATS at nats://REDACTED@a:4222,nats://b:4222, HTTP on 127.0.0.1:8080, poller on (3 schedules), 2 receiver(s), sinks: 0 slack, 0 http, autostop on (dry run)"},
		{"bus: {embedded: {listen: ''}}", nil, "config OK: embedded NATS (in-process only), HTTP on 127.0.0.1:8080, poller off (no cakework.api_key or CAKEWORK_API_KEY), 0 receiver(s), sinks: 0 slack, 0 http, autostop off"},
	}
	for _, tc := range tests {
		if got := mustParse(t, tc.src, tc.env).Summary(); got != tc.want {
			t.Errorf("Summary:\n got %s\nwant %s", got, tc.want)
		}
	}
}

func TestAliasBomb(t *testing.T) {
	src := `
a: &a {<<: {initial: 1s}}
b: &b {<<: [*a, *a, *a, *a, *a, *a, *a, *a, *a]}
c: &c {<<: [*b, *b, *b, *b, *b, *b, *b, *b, *b]}
d: &d {<<: [*c, *c, *c, *c, *c, *c, *c, *c, *c]}
e: &e {<<: [*d, *d, *d, *d, *d, *d, *d, *d, *d]}
f: &f {<<: [*e, *e, *e, *e, *e, *e, *e, *e, *e]}
g: &g {<<: [*f, *f, *f, *f, *f, *f, *f, *f, *f]}
sinks: {http: [{name: x, url: 'https://x/', retry: *g}]}
`
	done := make(chan error, 1)
	go func() { _, err := Parse([]byte(src), nil); done <- err }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("no error")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Parse did not finish")
	}
}

func FuzzParse(f *testing.F) {
	for _, name := range []string{"minimal.yaml", "unknown_keys.yaml", "anchors.yaml", "secrets_leak.yaml", "bools_off.yaml", "../../../config.example.yaml"} {
		data, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	for _, s := range []string{"", "~", "[]", "a: *b", "x: &x [*x]", "log: {level: ${L:-info}}", "${", "? [a]\n: b",
		"sinks: {http: [~, {retry: {<<: *r}}]}", "poller: {logs: {batch: 99999999999999999999}}", "http: {listen: ':'}"} {
		f.Add([]byte(s))
	}
	env := envOf(map[string]string{"L": "debug", "X": "${Y}"})
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data, env)
		if err == nil {
			if c == nil {
				t.Fatal("nil config and nil error")
			}
			if verr := c.Validate(); verr != nil {
				t.Fatalf("Parse accepted a config Validate rejects: %v", verr)
			}
			_ = c.Redacted()
			_ = c.Summary()
			return
		}
		var ps Problems
		if !errors.As(err, &ps) || len(ps) == 0 {
			t.Fatalf("error is not Problems: %v", err)
		}
	})
}

func TestApplyDefaults(t *testing.T) {
	c := Default(nil)
	c.Sinks.HTTP = []httpcb.Config{{Name: "console", URL: "http://127.0.0.1:1/"}}
	c.ApplyDefaults()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if h := c.Sinks.HTTP[0]; h.Timeout != 15*time.Second || h.Retry.MaxAttempts != 12 {
		t.Errorf("%+v", h)
	}
}

// A fleet needs an external NATS; the error says why and what to do.
func TestClusterNeedsExternalBus(t *testing.T) {
	data, err := os.ReadFile("testdata/bad/cluster.yaml")
	if err != nil {
		t.Fatal(err)
	}
	_, err = Parse(data, nil)
	var ps Problems
	if !errors.As(err, &ps) {
		t.Fatalf("got %v, want problems", err)
	}
	want := map[string]string{
		"cluster.enabled":   "needs an external NATS in bus.url",
		"cluster.member":    "is not a member name",
		"cluster.lease_ttl": "must be at least 1s",
		"bus.replicas":      "must be 1 with the embedded server",
	}
	for key, frag := range want {
		found := false
		for _, p := range ps {
			if p.Path == key && strings.Contains(p.Msg, frag) {
				found = true
			}
		}
		if !found {
			t.Errorf("no problem %s: %q...; got %v", key, frag, ps)
		}
	}
	good, err := os.ReadFile("testdata/good/cluster.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Parse(good, nil); err != nil {
		t.Errorf("a fleet member's config: %v", err)
	}
}

// bus.duplicate_window's default follows where the stream's duplicate map
// lives: the relay's memory (embedded), or the NATS server's.
func TestDuplicateWindowDefaultFollowsTheBus(t *testing.T) {
	for _, tc := range []struct {
		src  string
		want time.Duration
	}{
		{"", 30 * time.Second},
		{"bus: {url: 'nats://n:4222'}", 2 * time.Minute},
		{"bus: {url: 'nats://n:4222', duplicate_window: 45s}", 45 * time.Second},
		{"bus: {duplicate_window: 5m}", 5 * time.Minute},
	} {
		c, err := Parse([]byte(tc.src), nil)
		if err != nil {
			t.Fatalf("%q: %v", tc.src, err)
		}
		if c.Bus.Window() != tc.want {
			t.Errorf("%q: duplicate_window %s, want %s", tc.src, c.Bus.Window(), tc.want)
		}
	}
	if d := Default(nil).Bus.Window(); d != 30*time.Second {
		t.Errorf("no config file: %s, want 30s", d)
	}

	// A config built in code (tests, benches, the demo) that sets Bus.URL
	// after Default gets what a file with url gets: the default follows
	// the final URL. (Session-7 review: it kept the embedded 30 s.)
	c := Default(nil)
	c.Bus.URL = "nats://n:4222"
	c.ApplyDefaults()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if d := c.Bus.Window(); d != 2*time.Minute {
		t.Errorf("Default, then Bus.URL set in code: duplicate_window %s, want 2m as from a file", d)
	}
	// And the other way: a file's url taken out in code is the embedded 30 s.
	f, err := Parse([]byte("bus: {url: 'nats://n:4222'}"), nil)
	if err != nil {
		t.Fatal(err)
	}
	f.Bus.URL = ""
	if d := f.Bus.Window(); d != 30*time.Second {
		t.Errorf("a file's url removed in code: duplicate_window %s, want 30s", d)
	}
	// A fleet's check (at least 3x lease_ttl) sees the default too: 2m
	// against a lease_ttl of a minute is refused, set in code or by file.
	c.Cluster.Enabled, c.Cluster.LeaseTTL = true, time.Minute
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "bus.duplicate_window: must be at least 3x cluster.lease_ttl") {
		t.Errorf("fleet with lease_ttl 1m and the default window (2m): %v, want the 3x lease_ttl problem", err)
	}
}
