package poller

import (
	"fmt"
	"strings"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/cakework-relay/cakework-relay/internal/confcheck"
	"github.com/cakework-relay/cakework-relay/internal/event"
)

// Config is the poller section.
type Config struct {
	VMs         VMsConfig    `yaml:"vms"`
	Builds      BuildsConfig `yaml:"builds"`
	Logs        LogsConfig   `yaml:"logs"`
	WatchBuilds []string     `yaml:"watch_builds"`
	// Jitter delays each tick by a random amount up to this.
	Jitter          time.Duration `yaml:"jitter"`
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout" default:"3s"` // under relay serve's 4 s bound on shutdown
}

// VMsConfig is poller.vms: the VM sweep.
type VMsConfig struct {
	Schedule     string `yaml:"schedule" default:"@every 15s"`
	EmitBaseline bool   `yaml:"emit_baseline"`
}

// BuildsConfig is poller.builds: watched builds.
type BuildsConfig struct {
	Schedule   string        `yaml:"schedule" default:"@every 5s"`
	StuckAfter time.Duration `yaml:"stuck_after" default:"30m"`
	// MaxWatched caps the watched builds. A webhook for a build past it is
	// still published; the build is just not polled (counted in
	// relay_poller_watches_refused_total and /v1/status).
	MaxWatched int `yaml:"max_watched" default:"10000"`
	// DropUnknownAfter: a watched build Cakework has answered 404 for this
	// long is dropped (logged once). The time restarts with the relay.
	DropUnknownAfter time.Duration `yaml:"drop_unknown_after" default:"1h"`
}

// LogsConfig is poller.logs: log tails.
type LogsConfig struct {
	Schedule string `yaml:"schedule" default:"@every 5s"`
	Batch    int    `yaml:"batch" default:"500"`
	// MaxPages is the page budget per stream per tick.
	MaxPages int  `yaml:"max_pages" default:"10"`
	VMs      bool `yaml:"vms"`
	Builds   bool `yaml:"builds"`
}

// Defaults is the section with nothing set: every default, including the
// two whose default is not their zero value (logs.vms and logs.builds are
// on; false turns them off). A config file is decoded over it.
func Defaults() Config {
	c := Config{Logs: LogsConfig{VMs: true, Builds: true}}
	return c.WithDefaults()
}

// WithDefaults is c with every unset (zero) field at its default (the
// default tags). It leaves booleans alone: see Defaults.
func (c Config) WithDefaults() Config {
	confcheck.ApplyDefaults(&c)
	return c
}

// Validate reports what is wrong with c.
func (c Config) Validate(v *confcheck.Checker) {
	checkSchedule(v, "vms.schedule", c.VMs.Schedule)
	checkSchedule(v, "builds.schedule", c.Builds.Schedule)
	v.Duration("builds.stuck_after", c.Builds.StuckAfter)
	v.AtLeast1("builds.max_watched", c.Builds.MaxWatched)
	v.Duration("builds.drop_unknown_after", c.Builds.DropUnknownAfter)
	checkSchedule(v, "logs.schedule", c.Logs.Schedule)
	if c.Logs.Batch < 50 || c.Logs.Batch > 1000 {
		v.Add("logs.batch", fmt.Sprintf("%d is out of range; the Cakework API takes 50 to 1000", c.Logs.Batch))
	}
	v.AtLeast1("logs.max_pages", c.Logs.MaxPages)
	for i, id := range c.WatchBuilds {
		if !event.ValidToken(id) {
			v.Add(fmt.Sprintf("watch_builds[%d]", i), fmt.Sprintf("%s is not a build id; ids are 1 to 128 of A-Z, a-z, 0-9, _ and -", confcheck.Echo(id, false)))
		}
	}
	if c.Jitter < 0 {
		v.Add("jitter", "must not be negative (0 turns it off)")
	}
	v.Duration("shutdown_timeout", c.ShutdownTimeout)
}

func checkSchedule(v *confcheck.Checker, key, spec string) {
	if _, err := ParseSchedule(spec); err != nil {
		why := err.Error()
		if !confcheck.Shown(spec) {
			// The parser quotes the value's fields: not a long one's.
			for _, f := range strings.Fields(spec) {
				if len(f) >= 8 {
					why = strings.ReplaceAll(why, f, "...")
				}
			}
		}
		why = " (" + why + ")"
		v.Add(key, fmt.Sprintf(`%s is not a schedule%s; use "@every 15s" or a cron expression like "*/5 * * * *"`, confcheck.Echo(spec, false), why))
	}
}

// scheduleParser is the one cron parser: standard five fields with an
// optional leading seconds field, plus descriptors (@every 15s, @hourly).
var scheduleParser = cron.NewParser(cron.SecondOptional | cron.Minute | cron.Hour |
	cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// ParseSchedule parses a poller schedule. Validate checks schedules with it
// and New runs what it returns, so what check-config accepts is what runs.
// Schedules run in UTC, so a TZ= or CRON_TZ= prefix is refused.
func ParseSchedule(spec string) (cron.Schedule, error) {
	if strings.HasPrefix(spec, "TZ=") || strings.HasPrefix(spec, "CRON_TZ=") {
		return nil, fmt.Errorf("schedules run in UTC; remove the time zone prefix")
	}
	return scheduleParser.Parse(spec)
}
