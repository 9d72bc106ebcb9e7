package bus

import (
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/confcheck"
)

// Config is the bus section: an external NATS, or the embedded server, and
// the stream. Fields tagged secret:"true" are never printed in errors or
// logs.
type Config struct {
	// URL of an external NATS. Empty runs the embedded server.
	URL           string         `yaml:"url"`
	CredsFile     string         `yaml:"creds_file"`
	TLS           TLSConfig      `yaml:"tls"`
	Embedded      EmbeddedConfig `yaml:"embedded"`
	SubjectPrefix string         `yaml:"subject_prefix" default:"cakework"`
	Stream        string         `yaml:"stream" default:"CAKEWORK"`
	// DuplicateWindow: unset (0), 30s with the embedded server (its map is
	// in the relay's memory) and 2m with an external NATS (see
	// DefaultDuplicateWindow). It stays 0 after WithDefaults: read it with
	// Window, which follows the URL the config ends up with.
	DuplicateWindow time.Duration `yaml:"duplicate_window"`
	MaxAge          time.Duration `yaml:"max_age" default:"168h"`
	// Replicas is the streams' replica count: 3 on a NATS cluster, so an
	// acknowledged event survives the loss of a node.
	Replicas int `yaml:"replicas" default:"1"`
}

// TLSConfig is bus.tls, for an external NATS.
type TLSConfig struct {
	CAFile   string `yaml:"ca_file"`
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// EmbeddedConfig is bus.embedded, the embedded server.
type EmbeddedConfig struct {
	// Listen is the client address. Empty: in-process connections only.
	Listen string `yaml:"listen"`
	// Token is the subscriber credential (user "subscriber"). Empty: one
	// is generated into <data_dir>/nats-token (TokenFile).
	Token string `yaml:"token" secret:"true"`
	// ControlToken lets a client (user "control") publish
	// relay.watch.build and relay.vm.activity. Empty: nobody over TCP.
	ControlToken string `yaml:"control_token" secret:"true"`
}

// DefaultEmbeddedListen is bus.embedded.listen when the file leaves it
// out (see Defaults). The other fields' defaults are their default tags.
const DefaultEmbeddedListen = "127.0.0.1:4222"

// Defaults is what a file is decoded over: only the embedded listen
// address, whose default is not the zero value (a file that sets it to ""
// means in-process only). WithDefaults fills the rest after decoding;
// duplicate_window's default depends on url, so Window resolves it when it
// is read.
func Defaults() Config {
	return Config{Embedded: EmbeddedConfig{Listen: DefaultEmbeddedListen}}
}

// DefaultDuplicateWindow is bus.duplicate_window when it is not set. With
// the embedded server JetStream's duplicate map lives in the relay's
// memory (110-150 B per id): 30 s, enough for repeats while the relay
// runs, since a restart and a lost ack check the stream itself (package
// outbox). With an external NATS the map is the server's, and a fleet's
// new leader may publish again what the last one stored a failover and a
// poll later (and the poller announces again a build status that came by
// webhook once it is past the window): 2 m.
func DefaultDuplicateWindow(url string) time.Duration {
	if url != "" {
		return 2 * time.Minute
	}
	return 30 * time.Second
}

// WithDefaults is c with every unset (zero) field at its default (the
// default tags), but Embedded.Listen (see Defaults) and DuplicateWindow
// (see Window).
func (c Config) WithDefaults() Config {
	confcheck.ApplyDefaults(&c)
	return c
}

// Window is bus.duplicate_window as the relay uses it: the value set, or
// when unset DefaultDuplicateWindow of c.URL. It is resolved when read,
// not when defaults are filled, so a config built in code that sets URL
// after its defaults (config.Default, then Bus.URL) gets the same window
// as a file that sets url.
func (c Config) Window() time.Duration {
	if c.DuplicateWindow > 0 {
		return c.DuplicateWindow
	}
	return DefaultDuplicateWindow(c.URL)
}

// Validate reports what is wrong with c. It never quotes a URL.
func (c Config) Validate(v *confcheck.Checker) {
	if c.URL != "" {
		for i, u := range strings.Split(c.URL, ",") {
			u = strings.TrimSpace(u)
			key := "url"
			if strings.Contains(c.URL, ",") {
				key = fmt.Sprintf("url (server %d)", i+1)
			}
			pu, err := url.Parse(u)
			switch {
			case err != nil || pu.Host == "":
				v.Add(key, `not a NATS URL; use nats://host:4222 (several separated by ",")`)
			case pu.Scheme != "nats" && pu.Scheme != "tls" && pu.Scheme != "ws" && pu.Scheme != "wss":
				v.Add(key, "scheme must be nats, tls, ws or wss")
			}
		}
		if c.Replicas < 1 || c.Replicas > 5 {
			v.Add("replicas", "must be 1 to 5 (JetStream's limit); 3 on a NATS cluster of 3 or more nodes")
		}
	} else {
		if c.Replicas != 1 {
			v.Add("replicas", "must be 1 with the embedded server (it is one node); set bus.url to a NATS cluster for replicas")
		}
		v.HostPort("embedded.listen", c.Embedded.Listen, true)
		if c.Embedded.Listen != "" && c.Embedded.Token == "" && !confcheck.IsLoopback(c.Embedded.Listen) {
			v.Add("embedded.token", "required when bus.embedded.listen is not a loopback address (or listen on 127.0.0.1)")
		}
		if c.Embedded.ControlToken != "" && c.Embedded.ControlToken == c.Embedded.Token {
			v.Add("embedded.control_token", "must differ from bus.embedded.token: the subscriber credential must not steer the relay")
		}
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		v.Add("tls", "set both cert_file and key_file, or neither")
	}
	if !validSubjectPrefix(c.SubjectPrefix) {
		v.Add("subject_prefix", fmt.Sprintf("%s is not a NATS subject prefix; use dot-separated tokens with no spaces, * or > (like cakework or acme.cakework)", confcheck.Echo(c.SubjectPrefix, false)))
	}
	if c.Stream == "" || len(c.Stream) > 200 || strings.ContainsAny(c.Stream, " \t\r\n.*>/\\") || confcheck.HasControl(c.Stream) {
		v.Add("stream", fmt.Sprintf("%s is not a stream name; use letters, digits, - and _ (like CAKEWORK)", confcheck.Echo(c.Stream, false)))
	}
	if c.DuplicateWindow != 0 { // 0: unset, see Window
		v.Duration("duplicate_window", c.DuplicateWindow)
	}
	v.Duration("max_age", c.MaxAge)
	if w := c.Window(); w > 0 && c.MaxAge > 0 && w > c.MaxAge {
		v.Add("duplicate_window", "must not be longer than bus.max_age")
	}
}

func validSubjectPrefix(s string) bool {
	if s == "" {
		return false
	}
	for _, tok := range strings.Split(s, ".") {
		if tok == "" || strings.ContainsAny(tok, "*> \t\r\n") || confcheck.HasControl(tok) {
			return false
		}
	}
	return true
}
