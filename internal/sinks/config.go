package sinks

import (
	"fmt"
	"regexp"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/confcheck"
	"github.com/cakework-relay/cakework-relay/internal/event"
)

// RetryConfig is a sink's retry setting (sinks.slack[].retry, sinks.http[].retry):
// how long to wait after a failed attempt, and how many attempts an event
// gets before it is dead-lettered.
type RetryConfig struct {
	Initial     time.Duration `yaml:"initial" default:"1s"`
	MaxInterval time.Duration `yaml:"max_interval" default:"10m"`
	MaxAttempts int           `yaml:"max_attempts" default:"12"`
}

// WithDefaults fills the zero fields of r: 1s, 10m, 12 attempts.
func (r RetryConfig) WithDefaults() RetryConfig {
	confcheck.ApplyDefaults(&r)
	return r
}

// Validate reports what is wrong with r.
func (r RetryConfig) Validate(c *confcheck.Checker) {
	c.Duration("initial", r.Initial)
	c.Duration("max_interval", r.MaxInterval)
	if r.Initial > 0 && r.MaxInterval > 0 && r.Initial > r.MaxInterval {
		c.Add("initial", "must not be longer than max_interval")
	}
	c.AtLeast1("max_attempts", r.MaxAttempts)
}

// DefaultEvents is a sink's events filter when its config lists none.
func DefaultEvents(events []string) []string {
	if len(events) == 0 {
		return []string{"*"}
	}
	return events
}

var (
	nameRE    = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
	eventGlob = regexp.MustCompile(`^[A-Za-z0-9_.*-]+$`)
)

// CheckName checks a sink's name at key (it names the durable consumer
// sink_<name>) and reports whether it is well formed. Uniqueness across the
// sinks is the caller's to check.
func CheckName(c *confcheck.Checker, key, name string) bool {
	switch {
	case name == "":
		c.Add(key, "required; it names the sink's durable consumer")
	case !nameRE.MatchString(name):
		c.Add(key, fmt.Sprintf("%s is not a sink name; use 1 to 64 of A-Z, a-z, 0-9, _ and -", confcheck.Echo(name, false)))
	default:
		return true
	}
	return false
}

// IsEventType reports whether s has the shape of a short event type or
// glob (build.failed, vm.*): what template keys and filters are made of.
func IsEventType(s string) bool { return eventGlob.MatchString(s) }

// CheckEvents checks a sink's events filter at key: the globs the runner
// builds its filter from, with the same check, so what is accepted here
// matches something when the sink runs.
func CheckEvents(c *confcheck.Checker, key string, globs []string) {
	for i, g := range globs {
		k := fmt.Sprintf("%s[%d]", key, i)
		if !IsEventType(g) {
			c.Add(k, fmt.Sprintf(`%s is not an event filter; use short types like "build.failed", "vm.*" or "*"`, confcheck.Echo(g, false)))
			continue
		}
		if err := event.CheckGlob(g); err != nil {
			c.Add(k, err.Error())
		}
	}
}
