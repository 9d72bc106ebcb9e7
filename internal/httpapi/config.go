package httpapi

import (
	"fmt"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/confcheck"
)

// Config is the http section. Fields tagged secret:"true" are never printed
// in errors or logs.
type Config struct {
	Listen       string `yaml:"listen" default:"127.0.0.1:8080"`
	MaxBodyBytes int64  `yaml:"max_body_bytes" default:"1048576"`
	// MaxBodyBytesInFlight caps the webhook body bytes held across all
	// requests at once; past it a webhook gets 503 with Retry-After before
	// its body is read. The default, 32 MiB, keeps a flood of large bodies
	// inside a 256 MB container.
	MaxBodyBytesInFlight int64 `yaml:"max_body_bytes_in_flight" default:"33554432"`
	// AdminToken guards /v1/*. Empty turns the admin API off.
	AdminToken string `yaml:"admin_token" secret:"true"`
	// AdminListen, when set, serves /v1 (admin API, pprof) and /metrics
	// on this address only, off the public port.
	AdminListen  string        `yaml:"admin_listen"`
	ReadTimeout  time.Duration `yaml:"read_timeout" default:"10s"`
	WriteTimeout time.Duration `yaml:"write_timeout" default:"30s"`
}

// DefaultListen is Listen's default tag, for messages that name it (a test
// keeps the two in step).
const DefaultListen = "127.0.0.1:8080"

// WithDefaults is c with every unset (zero) field at its default (the
// default tags); an empty AdminToken stays empty (the admin API is off).
func (c Config) WithDefaults() Config {
	confcheck.ApplyDefaults(&c)
	return c
}

// Validate reports what is wrong with c.
func (c Config) Validate(v *confcheck.Checker) {
	v.HostPort("listen", c.Listen, false)
	if c.AdminListen != "" {
		v.HostPort("admin_listen", c.AdminListen, false)
		if c.AdminListen == c.Listen {
			v.Add("admin_listen", "must differ from http.listen (or leave it empty to serve everything on http.listen)")
		}
	}
	v.Positive("max_body_bytes", c.MaxBodyBytes)
	if c.MaxBodyBytesInFlight < c.MaxBodyBytes {
		v.Add("max_body_bytes_in_flight", fmt.Sprintf("%d is less than max_body_bytes (%d), so a body of the largest allowed size could never be read; raise it", c.MaxBodyBytesInFlight, c.MaxBodyBytes))
	}
	v.Duration("read_timeout", c.ReadTimeout)
	v.Duration("write_timeout", c.WriteTimeout)
}
