package config

import (
	"time"

	"github.com/cakework-relay/cakework-relay/internal/bus"
	"github.com/cakework-relay/cakework-relay/internal/confcheck"
	"github.com/cakework-relay/cakework-relay/internal/httpapi"
	"github.com/cakework-relay/cakework-relay/internal/ingest"
	"github.com/cakework-relay/cakework-relay/internal/poller"
)

// Default values of the keys this package owns, and the two that check-config
// and the summary name. They are listed in config.example.yaml too; a test
// keeps the two in step. The sections' own defaults are in their packages.
const (
	DefaultDataDir        = "./relay-data"
	DefaultHTTPListen     = httpapi.DefaultListen
	DefaultEmbeddedListen = bus.DefaultEmbeddedListen
	DefaultCakeworkURL    = "https://api.cakework.com"

	// Environment variables used when the file leaves the key empty, or
	// when there is no file.
	EnvAPIKey        = "CAKEWORK_API_KEY"
	EnvWebhookSecret = ingest.EnvWebhookSecret
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
	fill(c)
	applyEnv(c, env)
	return c
}

// preset is the struct a file is decoded into. Keys the file omits keep these
// values. That is the only way to get defaults that differ from the zero
// value of an optional setting: logs.vms and logs.builds (true), and
// bus.embedded.listen (an explicit "" means in-process only); their
// sections' Defaults set them.
func preset() *Config {
	// The rest is filled after decoding (fill). bus.duplicate_window's
	// default depends on bus.url and is resolved when read (bus.Config's
	// Window), so a config built in code that sets Bus.URL after Default
	// gets it too.
	return &Config{Bus: bus.Defaults(), Poller: poller.Defaults()}
}

// ApplyDefaults fills every unset field with its default, as Parse does after
// decoding. It is for configurations built in code (the demo, tests), which
// should then call Validate. It does not read the environment.
func (c *Config) ApplyDefaults() { fill(c) }

// fill sets the defaults of every field whose zero value means "not set":
// after decoding, an empty or zero value in the file gets the default, the
// same as a missing key. Each section's WithDefaults does its own fields,
// list elements (sinks, receivers) included, since the file is what creates
// them.
func fill(c *Config) {
	confcheck.Default(&c.DataDir, DefaultDataDir)
	confcheck.Default(&c.Log.Level, "info")
	confcheck.Default(&c.Log.Format, "text")

	c.HTTP = c.HTTP.WithDefaults()

	confcheck.Default(&c.Cakework.URL, DefaultCakeworkURL)
	confcheck.Default(&c.Cakework.RateLimit, 10)
	confcheck.Default(&c.Cakework.Timeout, 30*time.Second)

	c.Bus = c.Bus.WithDefaults()
	c.Ingest = c.Ingest.WithDefaults()
	c.Poller = c.Poller.WithDefaults()
	for i := range c.Sinks.Slack {
		c.Sinks.Slack[i] = c.Sinks.Slack[i].WithDefaults()
	}
	for i := range c.Sinks.HTTP {
		c.Sinks.HTTP[i] = c.Sinks.HTTP[i].WithDefaults()
	}
	c.Sinks.Autostop = c.Sinks.Autostop.WithDefaults()
	c.Cluster = c.Cluster.WithDefaults()
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
