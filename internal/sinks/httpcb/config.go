package httpcb

import (
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/confcheck"
	"github.com/cakework-relay/cakework-relay/internal/sinks"
)

// Config is one sinks.http entry. Fields tagged secret:"true" are never
// printed in errors or logs.
type Config struct {
	Name        string            `yaml:"name"`
	URL         string            `yaml:"url"`
	Secret      string            `yaml:"secret" secret:"true"`
	Events      []string          `yaml:"events"`
	Headers     map[string]string `yaml:"headers" secret:"true"` // values may carry credentials
	Timeout     time.Duration     `yaml:"timeout" default:"15s"`
	Concurrency int               `yaml:"concurrency" default:"4"`
	Retry       sinks.RetryConfig `yaml:"retry"`
}

// WithDefaults is c with every unset (zero) field at its default (the
// default tags, Retry's included). The relay's config applies it to every
// entry it decodes, and New to the one it is given, so a Config built in
// code gets the same defaults as one loaded.
func (c Config) WithDefaults() Config {
	confcheck.ApplyDefaults(&c)
	c.Events = sinks.DefaultEvents(c.Events)
	return c
}

// Validate reports everything wrong with c but its name, which the relay's
// config checks across all sinks (sinks.CheckName). Problems never quote the
// secret, a header value or the URL.
func (c Config) Validate(v *confcheck.Checker) {
	if c.URL == "" {
		v.Add("url", "required")
	} else {
		v.HTTPURL("url", c.URL, false)
	}
	v.Whsec("secret", c.Secret, "")
	sinks.CheckEvents(v, "events", c.Events)
	for _, k := range slices.Sorted(maps.Keys(c.Headers)) {
		val := c.Headers[k]
		kp := fmt.Sprintf("headers[%q]", k)
		if !confcheck.IsHeaderName(k) {
			v.Add(kp, "not an HTTP header name")
		}
		if strings.ContainsAny(val, "\r\n\x00") {
			v.Add(kp, "the value must not contain line breaks")
		}
	}
	v.Duration("timeout", c.Timeout)
	v.AtLeast1("concurrency", c.Concurrency)
	c.Retry.Validate(v.At("retry"))
}

// check is New's guard: c's name and Validate, at path.
func (c Config) check(path string) error {
	return confcheck.Check(path, func(v *confcheck.Checker) {
		sinks.CheckName(v, "name", c.Name)
		c.Validate(v)
	})
}

// safeURL is the endpoint as errors and logs show it: no user info, no
// query (either may carry a token).
func safeURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(invalid url)"
	}
	return u.Scheme + "://" + u.Host + u.EscapedPath()
}
