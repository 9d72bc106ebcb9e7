package cluster

import (
	"fmt"
	"os"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/confcheck"
	"github.com/cakework-relay/cakework-relay/internal/event"
)

// Config is the cluster section: several relays on one external NATS.
type Config struct {
	// Enabled makes this relay a member of the fleet on bus.stream.
	Enabled bool `yaml:"enabled"`
	// Member names this relay in the fleet. Default: the host name.
	Member string `yaml:"member"`
	// LeaseTTL is how long the leader's lease lasts without a renewal: a
	// silent leader is replaced within 2x this.
	LeaseTTL time.Duration `yaml:"lease_ttl" default:"10s"`
}

// MinLeaseTTL is the shortest lease: below it, a garbage-collection pause or
// one slow NATS round trip would cost the lease.
const MinLeaseTTL = time.Second

// WithDefaults is c with every unset (zero) field at its default.
func (c Config) WithDefaults() Config {
	confcheck.ApplyDefaults(&c)
	return c
}

// MemberName is c.Member, or the host name when it is empty.
func (c Config) MemberName() string {
	if c.Member != "" {
		return c.Member
	}
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "relay"
	}
	// A host name may hold dots (pod.namespace); a member name goes into
	// KV keys and log lines, so keep it a token.
	b := []byte(h)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			b[i] = '-'
		}
	}
	if len(b) > 128 {
		b = b[:128]
	}
	return string(b)
}

// Validate reports what is wrong with c. That the fleet needs an external
// NATS is the relay config's to check: bus.url is not in this section.
func (c Config) Validate(v *confcheck.Checker) {
	if c.LeaseTTL < MinLeaseTTL {
		v.Add("lease_ttl", fmt.Sprintf("must be at least %s, like 10s: a silent leader is replaced within 2x this", MinLeaseTTL))
	}
	if c.Member != "" && !event.ValidToken(c.Member) {
		v.Add("member", fmt.Sprintf("%s is not a member name; use 1 to 128 of A-Z, a-z, 0-9, _ and -", confcheck.Echo(c.Member, false)))
	}
}
