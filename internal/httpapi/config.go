package httpapi

import (
	"time"

	"github.com/cakework-relay/cakework-relay/internal/confcheck"
)

// Config is the http section. Fields tagged secret:"true" are never printed
// in errors or logs.
type Config struct {
	Listen       string `yaml:"listen"`
	MaxBodyBytes int64  `yaml:"max_body_bytes"`
	// AdminToken guards /v1/*. Empty turns the admin API off.
	AdminToken   string        `yaml:"admin_token" secret:"true"`
	ReadTimeout  time.Duration `yaml:"read_timeout"`
	WriteTimeout time.Duration `yaml:"write_timeout"`
}

// Defaults of the fields a Config leaves unset.
const (
	DefaultListen       = "127.0.0.1:8080"
	DefaultMaxBodyBytes = 1 << 20
	DefaultReadTimeout  = 10 * time.Second
	DefaultWriteTimeout = 30 * time.Second
)

// WithDefaults is c with every unset (zero) field at its default; an empty
// AdminToken stays empty (the admin API is off).
func (c Config) WithDefaults() Config {
	confcheck.Default(&c.Listen, DefaultListen)
	confcheck.Default(&c.MaxBodyBytes, DefaultMaxBodyBytes)
	confcheck.Default(&c.ReadTimeout, DefaultReadTimeout)
	confcheck.Default(&c.WriteTimeout, DefaultWriteTimeout)
	return c
}

// Validate reports what is wrong with c.
func (c Config) Validate(v *confcheck.Checker) {
	v.HostPort("listen", c.Listen, false)
	v.Positive("max_body_bytes", c.MaxBodyBytes)
	v.Duration("read_timeout", c.ReadTimeout)
	v.Duration("write_timeout", c.WriteTimeout)
}
