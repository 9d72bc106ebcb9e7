package autostop

import (
	"fmt"
	"strings"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/confcheck"
	"github.com/cakework-relay/cakework-relay/internal/event"
)

// Config is the auto-stopper's section (sinks.autostop; the key predates
// the package's move out of internal/sinks).
type Config struct {
	Enabled           bool          `yaml:"enabled"`
	IdleAfter         time.Duration `yaml:"idle_after" default:"30m"`
	WarnBefore        time.Duration `yaml:"warn_before" default:"5m"`
	DryRun            bool          `yaml:"dry_run"`
	MaxStopsPerMinute int           `yaml:"max_stops_per_minute" default:"5"`
	ExcludeImages     []string      `yaml:"exclude_images"`
	CachedVMs         []string      `yaml:"cached_vms"`
	// Check is the longest auto-stop goes without evaluating idle clocks.
	// They are also evaluated when a VM's warning or stop is due and after
	// every VM sweep and logs pass, so this is only a safety net.
	Check time.Duration `yaml:"check" default:"15s"`
}

// WithDefaults is c with every unset (zero) field at its default (the
// default tags). The relay's config applies it after decoding, and New to
// the Config it is given, so one built in code gets the same defaults as
// one loaded.
func (c Config) WithDefaults() Config {
	confcheck.ApplyDefaults(&c)
	return c
}

// Validate reports what is wrong with c. That enabling it needs a Cakework
// API key is the relay config's to check: the key is not in this section.
func (c Config) Validate(v *confcheck.Checker) {
	v.Duration("idle_after", c.IdleAfter)
	v.Duration("warn_before", c.WarnBefore)
	if c.WarnBefore > 0 && c.IdleAfter > 0 && c.WarnBefore >= c.IdleAfter {
		v.Add("warn_before", "must be shorter than idle_after")
	}
	v.AtLeast1("max_stops_per_minute", c.MaxStopsPerMinute)
	if c.Check <= 0 {
		v.Add("check", "must be a duration more than 0, like 15s: the longest auto-stop goes without evaluating idle clocks (they are also evaluated when a warning or stop is due and after every poll)")
	}
	for i, s := range c.ExcludeImages {
		if strings.TrimSpace(s) == "" {
			v.Add(fmt.Sprintf("exclude_images[%d]", i), "must not be empty")
		}
	}
	for i, s := range c.CachedVMs {
		if !event.ValidToken(s) {
			v.Add(fmt.Sprintf("cached_vms[%d]", i), fmt.Sprintf("%s is not a VM id; ids are 1 to 128 of A-Z, a-z, 0-9, _ and -", confcheck.Echo(s, false)))
		}
	}
}
