package config

import (
	"fmt"

	"github.com/cakework-relay/cakework-relay/internal/confcheck"
	"github.com/cakework-relay/cakework-relay/internal/sinks"
)

// reservedSinkNames cannot name a sink: the auto-stopper keeps its records
// in the state store under that sink name.
var reservedSinkNames = map[string]bool{"autostop": true}

// Validate checks everything a file can get wrong and that the daemon would
// otherwise find later, and returns Problems listing all of it, or nil. It
// never quotes a secret. Each section's rules are its package's Validate;
// what is checked here is this package's own keys and the rules that span
// sections (sink names unique across kinds, auto-stop needing an API key).
func (c *Config) Validate() error {
	v := confcheck.New("")

	v.OneOf("log.level", c.Log.Level, "debug", "info", "warn", "error")
	v.OneOf("log.format", c.Log.Format, "text", "json")
	v.NonEmpty("data_dir", c.DataDir)

	c.HTTP.Validate(v.At("http"))

	v.HTTPURL("cakework.url", c.Cakework.URL, false)
	if !(c.Cakework.RateLimit > 0) {
		v.Add("cakework.rate_limit", "must be more than 0 (requests per second)")
	}
	v.Duration("cakework.timeout", c.Cakework.Timeout)

	c.Bus.Validate(v.At("bus"))
	c.Ingest.Validate(v.At("ingest"))
	c.Poller.Validate(v.At("poller"))
	c.validateSinks(v.At("sinks"))
	c.Cluster.Validate(v.At("cluster"))
	if c.Cluster.Enabled && c.Bus.URL == "" {
		v.Add("cluster.enabled", "needs an external NATS in bus.url: the embedded server lives and dies with this relay, so a fleet cannot share it; run NATS with JetStream (a 3-node cluster for high availability) and point every member's bus.url at it")
	}
	if w := c.Bus.Window(); c.Cluster.Enabled && w > 0 && w < 3*c.Cluster.LeaseTTL {
		v.Add("bus.duplicate_window", fmt.Sprintf("must be at least 3x cluster.lease_ttl (%s) in a fleet: a new leader publishes again what the last one may have stored, and JetStream drops those repeats only inside this window", 3*c.Cluster.LeaseTTL))
	}
	return v.Err()
}

func (c *Config) validateSinks(v *confcheck.Checker) {
	names := map[string]string{}
	name := func(s *confcheck.Checker, n string) {
		if !sinks.CheckName(s, "name", n) {
			return
		}
		switch {
		case reservedSinkNames[n]:
			s.Add("name", fmt.Sprintf("%s is reserved; choose another name", confcheck.Echo(n, false)))
		case names[n] != "":
			s.Add("name", fmt.Sprintf("%s is already used by %s; sink names must be unique across all sinks", confcheck.Echo(n, false), names[n]))
		default:
			names[n] = s.Path("")
		}
	}
	for i, s := range c.Sinks.Slack {
		sv := v.At(fmt.Sprintf("slack[%d]", i))
		name(sv, s.Name)
		s.Validate(sv)
	}
	for i, h := range c.Sinks.HTTP {
		hv := v.At(fmt.Sprintf("http[%d]", i))
		name(hv, h.Name)
		h.Validate(hv)
	}
	a := c.Sinks.Autostop
	a.Validate(v.At("autostop"))
	if a.Enabled && c.Cakework.APIKey == "" {
		v.Add("autostop.enabled", "needs cakework.api_key (or "+EnvAPIKey+") to stop VMs")
	}
}
