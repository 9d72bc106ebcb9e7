package slack

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/confcheck"
	"github.com/cakework-relay/cakework-relay/internal/sinks"
	"github.com/cakework-relay/cakework-relay/internal/sinks/slack/headline"
)

// Config is one sinks.slack entry. Fields tagged secret:"true" are never
// printed in errors or logs.
type Config struct {
	Name        string            `yaml:"name"`
	Token       string            `yaml:"token" secret:"true"`
	WebhookURL  string            `yaml:"webhook_url" secret:"true"`
	Channel     string            `yaml:"channel"`
	Events      []string          `yaml:"events"`
	APIURL      string            `yaml:"api_url"`
	Concurrency int               `yaml:"concurrency" default:"1"`
	Retry       sinks.RetryConfig `yaml:"retry"`
	Templates   map[string]string `yaml:"templates"`
	Flood       Flood             `yaml:"flood"`
}

// Flood folds a burst of one event type into a summary.
type Flood struct {
	Threshold int           `yaml:"threshold" default:"5"` // more than this many ...
	Window    time.Duration `yaml:"window" default:"10s"`  // ... of one type within this window become a summary
}

const (
	// DefaultTimeout bounds one Slack API call.
	DefaultTimeout = 30 * time.Second
	// TailLines is how many log lines a failed build shows.
	TailLines = 20
)

// WithDefaults is c with every unset (zero) field at its default (the
// default tags, Retry's and Flood's included). The relay's config applies it
// to every entry it decodes, and New to the one it is given, so a Config
// built in code gets the same defaults as one loaded.
func (c Config) WithDefaults() Config {
	confcheck.ApplyDefaults(&c)
	c.Events = sinks.DefaultEvents(c.Events)
	return c
}

// Validate reports everything wrong with c but its name, which the relay's
// config checks across all sinks (sinks.CheckName). Problems never quote the
// token or the webhook URL.
func (c Config) Validate(v *confcheck.Checker) {
	switch {
	case c.Token == "" && c.WebhookURL == "":
		v.Named(c.Name).Add("", "set token (a bot token) or webhook_url (an incoming webhook)")
	case c.Token != "" && c.WebhookURL != "":
		v.Named(c.Name).Add("", "set token or webhook_url, not both")
	case c.Token != "" && c.Channel == "":
		v.Add("channel", `required with a bot token (like "#deploys")`)
	}
	if c.WebhookURL != "" {
		v.HTTPURL("webhook_url", c.WebhookURL, true)
	}
	if c.APIURL != "" {
		v.HTTPURL("api_url", c.APIURL, false)
	}
	sinks.CheckEvents(v, "events", c.Events)
	v.AtLeast1("concurrency", c.Concurrency)
	c.Retry.Validate(v.At("retry"))
	v.AtLeast1("flood.threshold", c.Flood.Threshold)
	v.Duration("flood.window", c.Flood.Window)
	// New parses the templates with the same function, so check-config and
	// serve accept the same ones.
	for _, k := range slices.Sorted(maps.Keys(c.Templates)) {
		text := c.Templates[k]
		kp := fmt.Sprintf("templates[%q]", k)
		if !sinks.IsEventType(k) {
			v.Add(kp, "the key must be a short event type like build.failed")
			continue
		}
		if _, err := headline.Parse(map[string]string{k: text}); err != nil {
			v.Add(kp, strings.TrimPrefix(err.Error(), fmt.Sprintf("templates[%q]: ", k)))
		}
	}
}

// check is New's guard: c's name and Validate, at path.
func (c Config) check(path string) error {
	return confcheck.Check(path, func(v *confcheck.Checker) {
		sinks.CheckName(v, "name", c.Name)
		c.Validate(v)
	})
}
