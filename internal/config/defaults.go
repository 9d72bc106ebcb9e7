package config

import "time"

// Default values. They are listed in config.example.yaml too; a test keeps
// the two in step.
const (
	DefaultDataDir        = "./relay-data"
	DefaultHTTPListen     = "127.0.0.1:8080"
	DefaultEmbeddedListen = "127.0.0.1:4222"
	DefaultCakeworkURL    = "https://api.cakework.com"

	// Environment variables used when the file leaves the key empty, or
	// when there is no file.
	EnvAPIKey        = "CAKEWORK_API_KEY"
	EnvWebhookSecret = "CAKEWORK_WEBHOOK_SECRET"
	EnvAdminToken    = "RELAY_ADMIN_TOKEN"
)

// Default is the configuration with no config file: the SPEC defaults, with
// the Cakework API key, the Cakework webhook secret and the admin token taken
// from the environment. A nil env is an empty environment. Default does not
// validate; Load("", env) does both.
func Default(env func(string) (string, bool)) *Config {
	if env == nil {
		env = noEnv
	}
	c := preset()
	applyEnv(c, env)
	return c
}

// preset is the struct a file is decoded into. Keys the file omits keep these
// values. That is the only way to get defaults that differ from the zero
// value of an optional setting: logs.vms and logs.builds (true), and
// bus.embedded.listen (an explicit "" means in-process only).
func preset() *Config {
	c := &Config{}
	c.Bus.Embedded.Listen = DefaultEmbeddedListen
	c.Poller.Logs.VMs = true
	c.Poller.Logs.Builds = true
	fill(c)
	return c
}

// ApplyDefaults fills every unset field with its default, as Parse does after
// decoding. It is for configurations built in code (the demo, tests), which
// should then call Validate. It does not read the environment.
func (c *Config) ApplyDefaults() { fill(c) }

// fill sets the defaults of every field whose zero value means "not set":
// after decoding, an empty or zero value in the file gets the default, the
// same as a missing key. List elements (sinks, receivers) get theirs here
// too, since the file is what creates them.
func fill(c *Config) {
	str(&c.DataDir, DefaultDataDir)
	str(&c.Log.Level, "info")
	str(&c.Log.Format, "text")

	str(&c.HTTP.Listen, DefaultHTTPListen)
	num(&c.HTTP.MaxBodyBytes, 1<<20)
	dur(&c.HTTP.ReadTimeout, 10*time.Second)
	dur(&c.HTTP.WriteTimeout, 30*time.Second)

	str(&c.Cakework.URL, DefaultCakeworkURL)
	num(&c.Cakework.RateLimit, 10)
	dur(&c.Cakework.Timeout, 30*time.Second)

	str(&c.Bus.SubjectPrefix, "cakework")
	str(&c.Bus.Stream, "CAKEWORK")
	dur(&c.Bus.DuplicateWindow, 10*time.Minute)
	dur(&c.Bus.MaxAge, 168*time.Hour)

	num(&c.Ingest.OutboxLimit, 100000)
	dur(&c.Ingest.SeenTTL, 72*time.Hour)
	num(&c.Ingest.SeenMax, 2000000)
	dur(&c.Ingest.TimestampTolerance, 5*time.Minute)
	for i := range c.Ingest.Webhooks {
		if h := c.Ingest.Webhooks[i].HMAC; h != nil {
			str(&h.Algorithm, "sha256")
		}
	}

	p := &c.Poller
	str(&p.VMs.Schedule, "@every 15s")
	str(&p.Builds.Schedule, "@every 5s")
	dur(&p.Builds.StuckAfter, 30*time.Minute)
	str(&p.Logs.Schedule, "@every 5s")
	num(&p.Logs.Batch, 500)
	num(&p.Logs.MaxPages, 10)
	// Under relay serve's 4 s bound on the whole shutdown.
	dur(&p.ShutdownTimeout, 3*time.Second)

	for i := range c.Sinks.Slack {
		s := &c.Sinks.Slack[i]
		num(&s.Concurrency, 1)
		num(&s.Flood.Threshold, 5)
		dur(&s.Flood.Window, 10*time.Second)
		retry(&s.Retry)
		events(&s.Events)
	}
	for i := range c.Sinks.HTTP {
		h := &c.Sinks.HTTP[i]
		dur(&h.Timeout, 15*time.Second)
		num(&h.Concurrency, 4)
		retry(&h.Retry)
		events(&h.Events)
	}

	a := &c.Sinks.Autostop
	dur(&a.IdleAfter, 30*time.Minute)
	dur(&a.WarnBefore, 5*time.Minute)
	num(&a.MaxStopsPerMinute, 5)
	dur(&a.Check, 15*time.Second)
}

func retry(r *Retry) {
	dur(&r.Initial, time.Second)
	dur(&r.MaxInterval, 10*time.Minute)
	num(&r.MaxAttempts, 12)
}

func events(e *[]string) {
	if len(*e) == 0 {
		*e = []string{"*"}
	}
}

func str(p *string, v string) {
	if *p == "" {
		*p = v
	}
}

func dur(p *time.Duration, v time.Duration) {
	if *p == 0 {
		*p = v
	}
}

func num[T int | int64 | float64](p *T, v T) {
	if *p == 0 {
		*p = v
	}
}

// applyEnv fills the three secrets the SPEC takes from the environment when
// the file leaves them empty. The Cakework receiver's secret comes from the
// environment only when the file gives it neither a secret nor a token.
func applyEnv(c *Config, env func(string) (string, bool)) {
	get := func(k string) string { v, _ := env(k); return v }
	if c.Cakework.APIKey == "" {
		c.Cakework.APIKey = get(EnvAPIKey)
	}
	if c.HTTP.AdminToken == "" {
		c.HTTP.AdminToken = get(EnvAdminToken)
	}
	if r := &c.Ingest.Cakework; r.Secret == "" && r.Token == "" {
		r.Secret = get(EnvWebhookSecret)
	}
}
