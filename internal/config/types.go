package config

import "time"

// Config is the whole relay configuration. Every key is listed in
// config.example.yaml and in the README's reference; a test keeps the three
// in step. Fields tagged secret:"true" are never printed in errors or logs.
type Config struct {
	DataDir  string   `yaml:"data_dir"`
	Log      Log      `yaml:"log"`
	HTTP     HTTP     `yaml:"http"`
	Cakework Cakework `yaml:"cakework"`
	Bus      Bus      `yaml:"bus"`
	Ingest   Ingest   `yaml:"ingest"`
	Poller   Poller   `yaml:"poller"`
	Sinks    Sinks    `yaml:"sinks"`
}

type Log struct {
	Level  string `yaml:"level"`  // debug | info | warn | error
	Format string `yaml:"format"` // text | json
}

type HTTP struct {
	Listen       string `yaml:"listen"`
	MaxBodyBytes int64  `yaml:"max_body_bytes"`
	// AdminToken guards /v1/*. Empty turns the admin API off.
	AdminToken   string        `yaml:"admin_token" secret:"true"`
	ReadTimeout  time.Duration `yaml:"read_timeout"`
	WriteTimeout time.Duration `yaml:"write_timeout"`
}

type Cakework struct {
	URL       string        `yaml:"url"`
	APIKey    string        `yaml:"api_key" secret:"true"`
	RateLimit float64       `yaml:"rate_limit"`
	Timeout   time.Duration `yaml:"timeout"`
}

type Bus struct {
	// URL of an external NATS. Empty runs the embedded server.
	URL             string        `yaml:"url"`
	CredsFile       string        `yaml:"creds_file"`
	TLS             TLS           `yaml:"tls"`
	Embedded        Embedded      `yaml:"embedded"`
	SubjectPrefix   string        `yaml:"subject_prefix"`
	Stream          string        `yaml:"stream"`
	DuplicateWindow time.Duration `yaml:"duplicate_window"`
	MaxAge          time.Duration `yaml:"max_age"`
}

type TLS struct {
	CAFile   string `yaml:"ca_file"`
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

type Embedded struct {
	// Listen is the client address. Empty: in-process connections only.
	Listen string `yaml:"listen"`
	// Token is required when Listen is not a loopback address.
	Token string `yaml:"token" secret:"true"`
}

type Ingest struct {
	Cakework CakeworkReceiver `yaml:"cakework"`
	Webhooks []Receiver       `yaml:"webhooks"`
	// OutboxLimit is how many unpublished events may wait before ingest
	// answers 503.
	OutboxLimit int `yaml:"outbox_limit"`
	// SeenTTL is how long webhook ids are remembered for dedup.
	SeenTTL time.Duration `yaml:"seen_ttl"`
	// SeenMax caps how many ids are remembered (about 40 bytes of memory
	// each); beyond it the oldest are forgotten before their seen_ttl.
	SeenMax int `yaml:"seen_max"`
	// TimestampTolerance bounds webhook-timestamp skew.
	TimestampTolerance time.Duration `yaml:"timestamp_tolerance"`
}

type CakeworkReceiver struct {
	// Configured is set by Load when the ingest.cakework block is present in
	// the file. A configured receiver with no auth stops the relay at start;
	// an unconfigured one with no CAKEWORK_WEBHOOK_SECRET is off (503).
	Configured     bool   `yaml:"-"`
	Secret         string `yaml:"secret" secret:"true"`
	Token          string `yaml:"token" secret:"true"`
	InsecureNoAuth bool   `yaml:"insecure_no_auth"`
}

type Receiver struct {
	Name           string `yaml:"name"`
	Secret         string `yaml:"secret" secret:"true"` // Standard Webhooks
	Token          string `yaml:"token" secret:"true"`
	HMAC           *HMAC  `yaml:"hmac"`
	InsecureNoAuth bool   `yaml:"insecure_no_auth"`
}

type HMAC struct {
	Header    string `yaml:"header"`
	Prefix    string `yaml:"prefix"`
	Algorithm string `yaml:"algorithm"` // sha256 (default) | sha1 | sha512
	Secret    string `yaml:"secret" secret:"true"`
}

type Poller struct {
	VMs         VMPoll    `yaml:"vms"`
	Builds      BuildPoll `yaml:"builds"`
	Logs        LogPoll   `yaml:"logs"`
	WatchBuilds []string  `yaml:"watch_builds"`
	// Jitter delays each tick by a random amount up to this.
	Jitter          time.Duration `yaml:"jitter"`
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
}

type VMPoll struct {
	Schedule     string `yaml:"schedule"`
	EmitBaseline bool   `yaml:"emit_baseline"`
}

type BuildPoll struct {
	Schedule   string        `yaml:"schedule"`
	StuckAfter time.Duration `yaml:"stuck_after"`
}

type LogPoll struct {
	Schedule string `yaml:"schedule"`
	Batch    int    `yaml:"batch"`
	// MaxPages is the page budget per stream per tick.
	MaxPages int  `yaml:"max_pages"`
	VMs      bool `yaml:"vms"`
	Builds   bool `yaml:"builds"`
}

type Sinks struct {
	Slack    []Slack  `yaml:"slack"`
	HTTP     []HTTPCB `yaml:"http"`
	Autostop Autostop `yaml:"autostop"`
}

type Retry struct {
	Initial     time.Duration `yaml:"initial"`
	MaxInterval time.Duration `yaml:"max_interval"`
	MaxAttempts int           `yaml:"max_attempts"`
}

type Slack struct {
	Name        string            `yaml:"name"`
	Token       string            `yaml:"token" secret:"true"`
	WebhookURL  string            `yaml:"webhook_url" secret:"true"`
	Channel     string            `yaml:"channel"`
	Events      []string          `yaml:"events"`
	APIURL      string            `yaml:"api_url"`
	Concurrency int               `yaml:"concurrency"`
	Retry       Retry             `yaml:"retry"`
	Templates   map[string]string `yaml:"templates"`
	Flood       Flood             `yaml:"flood"`
}

type Flood struct {
	Threshold int           `yaml:"threshold"` // more than this many ...
	Window    time.Duration `yaml:"window"`    // ... of one type within this window become a summary
}

type HTTPCB struct {
	Name        string            `yaml:"name"`
	URL         string            `yaml:"url"`
	Secret      string            `yaml:"secret" secret:"true"`
	Events      []string          `yaml:"events"`
	Headers     map[string]string `yaml:"headers" secret:"true"` // values may carry credentials
	Timeout     time.Duration     `yaml:"timeout"`
	Concurrency int               `yaml:"concurrency"`
	Retry       Retry             `yaml:"retry"`
}

type Autostop struct {
	Enabled           bool          `yaml:"enabled"`
	IdleAfter         time.Duration `yaml:"idle_after"`
	WarnBefore        time.Duration `yaml:"warn_before"`
	DryRun            bool          `yaml:"dry_run"`
	MaxStopsPerMinute int           `yaml:"max_stops_per_minute"`
	ExcludeImages     []string      `yaml:"exclude_images"`
	CachedVMs         []string      `yaml:"cached_vms"`
	// Check is the longest auto-stop goes without evaluating idle clocks.
	// They are also evaluated when a VM's warning or stop is due and after
	// every VM sweep and logs pass, so this is only a safety net.
	Check time.Duration `yaml:"check"`
}
