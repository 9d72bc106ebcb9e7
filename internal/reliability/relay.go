package reliability

import (
	"bufio"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/bus"
	"github.com/cakework-relay/cakework-relay/internal/event"
)

// Secrets used by every harness run. They are test values.
const (
	WebhookSecret  = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	CallbackSecret = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
	APIKey         = "sim-key"
	AdminToken     = "admin-token"
	// NATSToken is bus.embedded.token: the harness reads the stream as
	// the subscriber.
	NATSToken = "harness-subscriber-token"
	// GenericReceiver is the generic webhook receiver (Standard Webhooks
	// auth) the load goes to: its events do not make the poller watch
	// anything, so the webhook rate does not turn into API calls.
	GenericReceiver = "load"
)

// RelayConfig is what a harness run varies.
type RelayConfig struct {
	DataDir      string
	HTTPAddr     string
	EmbeddedAddr string // embedded NATS listen (when BusURL is "")
	BusURL       string // external NATS
	CakeworkURL  string // "" leaves the poller off
	RateLimit    float64
	OutboxLimit  int
	SeenTTL      time.Duration
	MaxAge       time.Duration
	VMsEvery     string // poller schedules, "@every 1s"
	BuildsEvery  string
	LogsEvery    string
	LogBatch     int
	LogMaxPages  int
	// CallbackURL, when set, adds an HTTP callback sink "cb" for
	// CallbackEvents with a fast retry.
	CallbackURL    string
	CallbackEvents []string
	CallbackRetry  string // YAML flow map, e.g. {initial: 20ms, max_interval: 200ms, max_attempts: 10000}
	CallbackConc   int
	// Autostop, when set, is sinks.autostop as a YAML flow map, e.g.
	// {enabled: true, idle_after: 3s, warn_before: 1s}.
	Autostop string
	LogLevel string
	// Member, when set, makes the relay a fleet member (cluster.enabled)
	// with LeaseTTL (default 2s); Replicas is bus.replicas.
	Member   string
	LeaseTTL time.Duration
	Replicas int
	// SlackURL, when set, adds a Slack sink "sl" (bot mode, channel C1)
	// whose Web API is at SlackURL (a fake Slack).
	SlackURL string
}

// YAML renders the relay config file.
func (c RelayConfig) YAML() string {
	var b strings.Builder
	lvl := c.LogLevel
	if lvl == "" {
		lvl = "warn"
	}
	fmt.Fprintf(&b, "data_dir: %s\nlog: {level: %s}\n", c.DataDir, lvl)
	fmt.Fprintf(&b, "http: {listen: %q, admin_token: %q}\n", c.HTTPAddr, AdminToken)
	if c.CakeworkURL != "" {
		rl := c.RateLimit
		if rl == 0 {
			rl = 1000
		}
		fmt.Fprintf(&b, "cakework: {url: %q, api_key: %q, rate_limit: %v, timeout: 5s}\n", c.CakeworkURL, APIKey, rl)
	}
	b.WriteString("bus:\n")
	if c.BusURL != "" {
		fmt.Fprintf(&b, "  url: %q\n", c.BusURL)
	} else {
		fmt.Fprintf(&b, "  embedded: {listen: %q, token: %q}\n", c.EmbeddedAddr, NATSToken)
	}
	if c.Replicas > 0 {
		fmt.Fprintf(&b, "  replicas: %d\n", c.Replicas)
	}
	if c.MaxAge > 0 {
		fmt.Fprintf(&b, "  max_age: %s\n  duplicate_window: %s\n", c.MaxAge, min(c.MaxAge, 10*time.Minute))
	}
	b.WriteString("ingest:\n")
	fmt.Fprintf(&b, "  cakework: {secret: %q}\n", WebhookSecret)
	fmt.Fprintf(&b, "  webhooks:\n    - {name: %s, secret: %q}\n", GenericReceiver, WebhookSecret)
	if c.OutboxLimit > 0 {
		fmt.Fprintf(&b, "  outbox_limit: %d\n", c.OutboxLimit)
	}
	if c.SeenTTL > 0 {
		fmt.Fprintf(&b, "  seen_ttl: %s\n", c.SeenTTL)
	}
	if c.CakeworkURL != "" {
		or := func(s, d string) string {
			if s == "" {
				return d
			}
			return s
		}
		batch, pages := c.LogBatch, c.LogMaxPages
		if batch == 0 {
			batch = 500
		}
		if pages == 0 {
			pages = 10
		}
		fmt.Fprintf(&b, "poller:\n  vms: {schedule: %q}\n  builds: {schedule: %q}\n  logs: {schedule: %q, batch: %d, max_pages: %d, vms: true, builds: true}\n  shutdown_timeout: 1s\n",
			or(c.VMsEvery, "@every 1s"), or(c.BuildsEvery, "@every 1s"), or(c.LogsEvery, "@every 1s"), batch, pages)
	}
	if c.Member != "" {
		ttl := c.LeaseTTL
		if ttl == 0 {
			ttl = 2 * time.Second
		}
		fmt.Fprintf(&b, "cluster: {enabled: true, member: %q, lease_ttl: %s}\n", c.Member, ttl)
	}
	if c.CallbackURL != "" || c.Autostop != "" || c.SlackURL != "" {
		b.WriteString("sinks:\n")
	}
	if c.Autostop != "" {
		fmt.Fprintf(&b, "  autostop: %s\n", c.Autostop)
	}
	if c.CallbackURL != "" {
		ev := c.CallbackEvents
		if len(ev) == 0 {
			ev = []string{"*"}
		}
		retry := c.CallbackRetry
		if retry == "" {
			retry = "{initial: 20ms, max_interval: 200ms, max_attempts: 100000}"
		}
		conc := max(c.CallbackConc, 1)
		fmt.Fprintf(&b, "  http:\n    - name: cb\n      url: %q\n      secret: %q\n      events: [%s]\n      timeout: 2s\n      concurrency: %d\n      retry: %s\n",
			c.CallbackURL, CallbackSecret, quoteList(ev), conc, retry)
	}
	if c.SlackURL != "" {
		fmt.Fprintf(&b, "  slack:\n    - {name: sl, token: xoxb-test, channel: C1, api_url: %q, events: [\"build.*\"], retry: {initial: 50ms, max_interval: 500ms, max_attempts: 100000}}\n", c.SlackURL)
	}
	return b.String()
}

func quoteList(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = strconv.Quote(s)
	}
	return strings.Join(q, ", ")
}

// Relay is a relay process with its config on disk.
type Relay struct {
	Bin     string
	Cfg     RelayConfig
	CfgPath string
	P       *Proc
	// LogFile, when set, gets a copy of the relay's output.
	LogFile *os.File
	// Env is added to the relay's environment (say, GOMEMLIMIT=230MiB).
	Env []string
	// Cgroup, when set, is the memory cgroup the relay runs in from its
	// first instruction (so relay serve sizes its memory limit from it).
	Cgroup *MemCgroup
}

// NewRelay writes the config file into dir, and the install key (InstallKey)
// into the data_dir, so the harness knows the relay's event ids (IDs).
func NewRelay(bin, dir string, cfg RelayConfig) (*Relay, error) {
	p := filepath.Join(dir, "relay.yaml")
	if err := os.WriteFile(p, []byte(cfg.YAML()), 0o600); err != nil {
		return nil, err
	}
	if err := PrepareDataDir(cfg.DataDir); err != nil {
		return nil, err
	}
	return &Relay{Bin: bin, Cfg: cfg, CfgPath: p}, nil
}

// Start runs the relay and waits for /healthz.
func (r *Relay) Start() error {
	env := append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.TempDir()}, r.Env...)
	bin, args := r.Bin, []string{"serve", "-config", r.CfgPath}
	if r.Cgroup != nil {
		// The shell joins the cgroup, then becomes the relay (same pid).
		bin, args = "/bin/sh", append([]string{"-c", `echo $$ > "$1/cgroup.procs" && shift && exec "$@"`, "sh", r.Cgroup.Path, r.Bin}, args...)
	}
	p, err := Start(bin, args, env, r.LogFile)
	if err != nil {
		return err
	}
	r.P = p
	if err := WaitHTTP(r.URL("/healthz"), 200, 20*time.Second, p.Done()); err != nil {
		p.Kill()
		return fmt.Errorf("%w\nrelay output:\n%s", err, p.Logs)
	}
	return nil
}

// URL is a URL on the relay's HTTP server.
func (r *Relay) URL(path string) string { return "http://" + r.Cfg.HTTPAddr + path }

// InstallKey is the install key of every relay the harness starts; IDs
// derives their event ids.
var InstallKey = []byte("reliability harness install key!")

// PrepareDataDir puts InstallKey into a relay's data_dir (unless it has
// one), so IDs are its event ids.
func PrepareDataDir(dataDir string) error {
	if err := os.MkdirAll(dataDir, 0o750); err != nil {
		return err
	}
	kp := filepath.Join(dataDir, "install-key")
	if _, err := os.Stat(kp); os.IsNotExist(err) {
		return os.WriteFile(kp, []byte(hex.EncodeToString(InstallKey)+"\n"), 0o600)
	}
	return nil
}

// IDs are the event ids of the relays the harness starts (fresh data_dirs:
// keyed ids).
var IDs = event.KeyedIDs(InstallKey)

// NATSURL is where the relay's events can be read.
func (r *Relay) NATSURL() string {
	if r.Cfg.BusURL != "" {
		return r.Cfg.BusURL
	}
	return "nats://" + bus.UserSubscriber + ":" + NATSToken + "@" + r.Cfg.EmbeddedAddr
}

// Ready fetches /readyz: its status and body.
func (r *Relay) Ready() (int, string, error) {
	hc := &http.Client{Timeout: 2 * time.Second}
	res, err := hc.Get(r.URL("/readyz"))
	if err != nil {
		return 0, "", err
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b), nil
}

// Metrics scrapes /metrics and returns the samples whose names (with
// labels) start with one of prefixes.
func (r *Relay) Metrics(ctx context.Context, prefixes ...string) (map[string]float64, error) {
	return ScrapeMetrics(ctx, r.URL("/metrics"), prefixes...)
}

// ScrapeMetrics reads a Prometheus text page.
func ScrapeMetrics(ctx context.Context, url string, prefixes ...string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	hc := &http.Client{Timeout: 5 * time.Second}
	res, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		name := line[:i]
		ok := len(prefixes) == 0
		for _, p := range prefixes {
			if strings.HasPrefix(name, p) {
				ok = true
				break
			}
		}
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err == nil {
			out[name] = v
		}
	}
	return out, sc.Err()
}

// WaitBaseline waits until the poller has completed a VM sweep (the first
// one is the baseline).
func (r *Relay) WaitBaseline(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		m, err := r.Metrics(ctx, `relay_poller_last_success_timestamp_seconds{schedule="vms"}`)
		if err == nil && len(m) > 0 {
			for _, v := range m {
				if v > 0 {
					return nil
				}
			}
		}
		if err := CtxSleep(ctx, 100*time.Millisecond); err != nil {
			return fmt.Errorf("no VM sweep completed in %s", timeout)
		}
	}
}

// FileSize is the size of path, or -1.
func FileSize(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return -1
	}
	return st.Size()
}

// DirSize is the total size of the files under dir.
func DirSize(dir string) int64 {
	var n int64
	_ = filepath.Walk(dir, func(_ string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			n += info.Size()
		}
		return nil
	})
	return n
}
