package ingest

import (
	"fmt"
	"regexp"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/confcheck"
)

// Config is the ingest section: the webhook receivers and their limits.
// Fields tagged secret:"true" are never printed in errors or logs.
type Config struct {
	Cakework CakeworkConfig  `yaml:"cakework"`
	Webhooks []WebhookConfig `yaml:"webhooks"`
	// OutboxLimit is how many unpublished events may wait before ingest
	// answers 503.
	OutboxLimit int `yaml:"outbox_limit" default:"100000"`
	// SeenTTL is how long webhook ids are remembered for dedup.
	SeenTTL time.Duration `yaml:"seen_ttl" default:"72h"`
	// SeenMax caps how many ids are remembered (about 36 bytes of memory
	// each, 80 with the id of their event, as a Cakework webhook's is;
	// measured with bench/sizing); beyond it the oldest are forgotten
	// before their seen_ttl. The default, about 20 MB at most, fits a
	// 256 MiB container and is still minutes of ids at 1,000 webhooks/s,
	// past bus.duplicate_window.
	SeenMax int `yaml:"seen_max" default:"300000"`
	// TimestampTolerance bounds webhook-timestamp skew.
	TimestampTolerance time.Duration `yaml:"timestamp_tolerance" default:"5m"`
}

// CakeworkConfig is ingest.cakework, the Cakework build webhooks.
type CakeworkConfig struct {
	// Configured is set by the config loader when the ingest.cakework block
	// is present in the file. A configured receiver with no auth stops the
	// relay at start; an unconfigured one with no CAKEWORK_WEBHOOK_SECRET is
	// off (503).
	Configured     bool   `yaml:"-"`
	Secret         string `yaml:"secret" secret:"true"`
	Token          string `yaml:"token" secret:"true"`
	InsecureNoAuth bool   `yaml:"insecure_no_auth"`
}

// WebhookConfig is one ingest.webhooks entry, a generic receiver.
type WebhookConfig struct {
	Name           string      `yaml:"name"`
	Secret         string      `yaml:"secret" secret:"true"` // Standard Webhooks
	Token          string      `yaml:"token" secret:"true"`
	HMAC           *HMACConfig `yaml:"hmac"`
	InsecureNoAuth bool        `yaml:"insecure_no_auth"`
}

// HMACConfig is a receiver's GitHub-style signature header.
type HMACConfig struct {
	Header    string `yaml:"header"`
	Prefix    string `yaml:"prefix"`
	Algorithm string `yaml:"algorithm" default:"sha256"` // sha256, sha1 or sha512
	Secret    string `yaml:"secret" secret:"true"`
}

// EnvWebhookSecret is the environment variable the Cakework receiver's
// secret comes from when the config sets neither a secret nor a token.
const EnvWebhookSecret = "CAKEWORK_WEBHOOK_SECRET"

// WithDefaults is c with every unset (zero) field at its default (the
// default tags), in every receiver too. The relay's config applies it after
// decoding, and New to the Config it is given, so one built in code gets the
// same defaults as one loaded. It does not read the environment.
func (c Config) WithDefaults() Config {
	confcheck.ApplyDefaults(&c)
	if len(c.Webhooks) > 0 {
		ws := make([]WebhookConfig, len(c.Webhooks))
		for i, w := range c.Webhooks {
			if w.HMAC != nil && w.HMAC.Algorithm == "" {
				h := *w.HMAC
				confcheck.ApplyDefaults(&h)
				w.HMAC = &h
			}
			ws[i] = w
		}
		c.Webhooks = ws
	}
	return c
}

var receiverName = regexp.MustCompile(`^[a-z0-9_-]{1,64}$`)

// Validate reports what is wrong with c, and so which receivers New would
// refuse: a configured receiver with no auth and no insecure_no_auth.
func (c Config) Validate(v *confcheck.Checker) {
	if r := &c.Cakework; r.Configured || r.Secret != "" {
		if r.Configured && r.Secret == "" && r.Token == "" && !r.InsecureNoAuth {
			v.Add("cakework", "no auth configured; set secret or token (or "+EnvWebhookSecret+"), or insecure_no_auth: true")
		}
		v.Whsec("cakework.secret", r.Secret, "set in the file or in "+EnvWebhookSecret)
	}
	names := map[string]string{}
	for i, r := range c.Webhooks {
		w := v.At(fmt.Sprintf("webhooks[%d]", i))
		switch {
		case r.Name == "":
			w.Add("name", "required; it is the path /webhooks/{name} and the event type webhook.{name}")
		case !receiverName.MatchString(r.Name):
			w.Add("name", fmt.Sprintf("%s is not a receiver name; use 1 to 64 of a-z, 0-9, _ and -", confcheck.Echo(r.Name, false)))
		case r.Name == CakeworkReceiver:
			w.Add("name", `"cakework" is the Cakework receiver; configure it under ingest.cakework`)
		case names[r.Name] != "":
			w.Add("name", fmt.Sprintf("%s is already used by %s", confcheck.Echo(r.Name, false), names[r.Name]))
		default:
			names[r.Name] = w.Path("")
		}
		if r.Secret == "" && r.Token == "" && r.HMAC == nil && !r.InsecureNoAuth {
			w.Named(r.Name).Add("", "no auth configured; set secret, token or hmac, or insecure_no_auth: true")
		}
		w.Whsec("secret", r.Secret, "")
		if h := r.HMAC; h != nil {
			if h.Header == "" {
				w.Add("hmac.header", "required: the request header that carries the signature (like X-Hub-Signature-256)")
			} else if !confcheck.IsHeaderName(h.Header) {
				w.Add("hmac.header", fmt.Sprintf("%s is not an HTTP header name", confcheck.Echo(h.Header, false)))
			}
			if h.Secret == "" {
				w.Add("hmac.secret", "required")
			}
			w.OneOf("hmac.algorithm", h.Algorithm, "sha256", "sha1", "sha512")
		}
	}
	if c.OutboxLimit < 1 {
		v.Add("outbox_limit", "must be at least 1")
	}
	v.Duration("seen_ttl", c.SeenTTL)
	if c.SeenMax < 1000 {
		v.Add("seen_max", "must be at least 1000 (each remembered id takes about 36 to 80 bytes of memory)")
	}
	v.Duration("timestamp_tolerance", c.TimestampTolerance)
}
