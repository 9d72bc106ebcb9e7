package config

import (
	"fmt"
	"net/url"
	"reflect"
	"strings"
)

// Redacted is a deep copy of c, safe to log: every non-empty field tagged
// secret:"true" (and every value of a secret map, like sinks.http[].headers)
// reads "REDACTED".
func (c *Config) Redacted() *Config {
	out := new(Config)
	copyRedacted(reflect.ValueOf(out).Elem(), reflect.ValueOf(c).Elem(), false)
	return out
}

func copyRedacted(dst, src reflect.Value, secret bool) {
	switch src.Kind() {
	case reflect.Struct:
		t := src.Type()
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			copyRedacted(dst.Field(i), src.Field(i), secret || f.Tag.Get("secret") == "true")
		}
	case reflect.Pointer:
		if !src.IsNil() {
			n := reflect.New(src.Type().Elem())
			copyRedacted(n.Elem(), src.Elem(), secret)
			dst.Set(n)
		}
	case reflect.Slice:
		if !src.IsNil() {
			s := reflect.MakeSlice(src.Type(), src.Len(), src.Len())
			for i := 0; i < src.Len(); i++ {
				copyRedacted(s.Index(i), src.Index(i), secret)
			}
			dst.Set(s)
		}
	case reflect.Map:
		if !src.IsNil() {
			m := reflect.MakeMapWithSize(src.Type(), src.Len())
			it := src.MapRange()
			for it.Next() {
				e := reflect.New(src.Type().Elem()).Elem()
				copyRedacted(e, it.Value(), secret)
				m.SetMapIndex(it.Key(), e)
			}
			dst.Set(m)
		}
	case reflect.String:
		if secret && src.Len() > 0 {
			dst.SetString("REDACTED")
		} else {
			dst.Set(src)
		}
	default:
		dst.Set(src)
	}
}

// Summary is the one line `relay check-config` prints for a valid config.
// It never includes a secret; an external NATS URL is shown without its
// password.
func (c *Config) Summary() string {
	var parts []string
	switch {
	case c.Bus.URL != "":
		var servers []string
		for _, s := range strings.Split(c.Bus.URL, ",") {
			s = strings.TrimSpace(s)
			if u, err := url.Parse(s); err == nil {
				if u.User != nil {
					u.User = url.User("REDACTED")
				}
				s = u.String()
			}
			servers = append(servers, s)
		}
		parts = append(parts, "external NATS at "+strings.Join(servers, ","))
	case c.Bus.Embedded.Listen == "":
		parts = append(parts, "embedded NATS (in-process only)")
	default:
		parts = append(parts, "embedded NATS on "+c.Bus.Embedded.Listen)
	}
	parts = append(parts, "HTTP on "+c.HTTP.Listen)
	if c.Cakework.APIKey == "" {
		parts = append(parts, "poller off (no cakework.api_key or "+EnvAPIKey+")")
	} else {
		parts = append(parts, "poller on (3 schedules)")
	}
	receivers := len(c.Ingest.Webhooks)
	if r := c.Ingest.Cakework; r.Configured || r.Secret != "" || r.Token != "" {
		receivers++
	}
	parts = append(parts, fmt.Sprintf("%d receiver(s)", receivers))
	parts = append(parts, fmt.Sprintf("sinks: %d slack, %d http", len(c.Sinks.Slack), len(c.Sinks.HTTP)))
	switch a := c.Sinks.Autostop; {
	case !a.Enabled:
		parts = append(parts, "autostop off")
	case a.DryRun:
		parts = append(parts, "autostop on (dry run)")
	default:
		parts = append(parts, "autostop on")
	}
	return "config OK: " + strings.Join(parts, ", ")
}
