package config

import (
	"encoding/base64"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/cakework-relay/cakework-relay/internal/event"
	"github.com/cakework-relay/cakework-relay/internal/sinks/slack/headline"
)

var (
	receiverName = regexp.MustCompile(`^[a-z0-9_-]{1,64}$`)
	sinkName     = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
	resourceID   = regexp.MustCompile(`^[A-Za-z0-9_-]{1,128}$`)
	eventGlob    = regexp.MustCompile(`^[A-Za-z0-9_.*-]+$`)
	headerName   = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
)

// scheduleParser is the one cron parser: standard five fields with an
// optional leading seconds field, plus descriptors (@every 15s, @hourly).
var scheduleParser = cron.NewParser(cron.SecondOptional | cron.Minute | cron.Hour |
	cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// ParseSchedule parses a poller schedule exactly as Validate checks it. The
// poller must use it so that what check-config accepts is what runs.
// Schedules run in UTC, so a TZ= or CRON_TZ= prefix is refused.
func ParseSchedule(spec string) (cron.Schedule, error) {
	if strings.HasPrefix(spec, "TZ=") || strings.HasPrefix(spec, "CRON_TZ=") {
		return nil, fmt.Errorf("schedules run in UTC; remove the time zone prefix")
	}
	return scheduleParser.Parse(spec)
}

// reservedSinkNames cannot name a sink: the auto-stopper's durable consumer
// uses them.
var reservedSinkNames = map[string]bool{"autostop": true}

// Validate checks everything a file can get wrong and that the daemon would
// otherwise find later, and returns Problems listing all of it, or nil. It
// never quotes a secret.
func (c *Config) Validate() error {
	var p Problems
	v := validator{&p}

	v.oneOf("log.level", c.Log.Level, "debug", "info", "warn", "error")
	v.oneOf("log.format", c.Log.Format, "text", "json")
	v.nonEmpty("data_dir", c.DataDir)

	// http
	v.hostPort("http.listen", c.HTTP.Listen, false)
	v.positive("http.max_body_bytes", c.HTTP.MaxBodyBytes)
	v.duration("http.read_timeout", c.HTTP.ReadTimeout)
	v.duration("http.write_timeout", c.HTTP.WriteTimeout)

	// cakework
	v.httpURL("cakework.url", c.Cakework.URL, urlOpts{})
	if !(c.Cakework.RateLimit > 0) {
		p.add("cakework.rate_limit", "must be more than 0 (requests per second)")
	}
	v.duration("cakework.timeout", c.Cakework.Timeout)

	c.validateBus(v)
	c.validateIngest(v)
	c.validatePoller(v)
	c.validateSinks(v)

	if len(p) == 0 {
		return nil
	}
	return p
}

func (c *Config) validateBus(v validator) {
	b := &c.Bus
	if b.URL != "" {
		for i, u := range strings.Split(b.URL, ",") {
			u = strings.TrimSpace(u)
			path := "bus.url"
			if strings.Contains(b.URL, ",") {
				path = fmt.Sprintf("bus.url (server %d)", i+1)
			}
			pu, err := url.Parse(u)
			switch {
			case err != nil || pu.Host == "":
				v.add(path, `not a NATS URL; use nats://host:4222 (several separated by ",")`)
			case pu.Scheme != "nats" && pu.Scheme != "tls" && pu.Scheme != "ws" && pu.Scheme != "wss":
				v.add(path, "scheme must be nats, tls, ws or wss")
			}
		}
	} else {
		v.hostPort("bus.embedded.listen", b.Embedded.Listen, true)
		if b.Embedded.Listen != "" && b.Embedded.Token == "" && !isLoopback(b.Embedded.Listen) {
			v.add("bus.embedded.token", "required when bus.embedded.listen is not a loopback address (or listen on 127.0.0.1)")
		}
	}
	if (b.TLS.CertFile == "") != (b.TLS.KeyFile == "") {
		v.add("bus.tls", "set both cert_file and key_file, or neither")
	}
	if !validSubjectPrefix(b.SubjectPrefix) {
		v.add("bus.subject_prefix", fmt.Sprintf("%q is not a NATS subject prefix; use dot-separated tokens with no spaces, * or > (like cakework or acme.cakework)", b.SubjectPrefix))
	}
	if b.Stream == "" || len(b.Stream) > 200 || strings.ContainsAny(b.Stream, " \t\r\n.*>/\\") || hasControl(b.Stream) {
		v.add("bus.stream", fmt.Sprintf("%q is not a stream name; use letters, digits, - and _ (like CAKEWORK)", b.Stream))
	}
	v.duration("bus.duplicate_window", b.DuplicateWindow)
	v.duration("bus.max_age", b.MaxAge)
	if b.DuplicateWindow > 0 && b.MaxAge > 0 && b.DuplicateWindow > b.MaxAge {
		v.add("bus.duplicate_window", "must not be longer than bus.max_age")
	}
}

func (c *Config) validateIngest(v validator) {
	in := &c.Ingest
	if r := &in.Cakework; r.Configured || r.Secret != "" {
		if r.Configured && r.Secret == "" && r.Token == "" && !r.InsecureNoAuth {
			v.add("ingest.cakework", "no auth configured; set secret or token (or "+EnvWebhookSecret+"), or insecure_no_auth: true")
		}
		v.whsec("ingest.cakework.secret", r.Secret, "set in the file or in "+EnvWebhookSecret)
	}
	names := map[string]string{}
	for i, r := range in.Webhooks {
		path := fmt.Sprintf("ingest.webhooks[%d]", i)
		label := path
		if r.Name != "" {
			label = fmt.Sprintf("%s (%s)", path, r.Name)
		}
		switch {
		case r.Name == "":
			v.add(path+".name", "required; it is the path /webhooks/{name} and the event type webhook.{name}")
		case !receiverName.MatchString(r.Name):
			v.add(path+".name", fmt.Sprintf("%s is not a receiver name; use 1 to 64 of a-z, 0-9, _ and -", echo(r.Name, false)))
		case r.Name == "cakework":
			v.add(path+".name", `"cakework" is the Cakework receiver; configure it under ingest.cakework`)
		case names[r.Name] != "":
			v.add(path+".name", fmt.Sprintf("%q is already used by %s", r.Name, names[r.Name]))
		default:
			names[r.Name] = path
		}
		if r.Secret == "" && r.Token == "" && r.HMAC == nil && !r.InsecureNoAuth {
			v.add(label, "no auth configured; set secret, token or hmac, or insecure_no_auth: true")
		}
		v.whsec(path+".secret", r.Secret, "")
		if h := r.HMAC; h != nil {
			if h.Header == "" {
				v.add(path+".hmac.header", "required: the request header that carries the signature (like X-Hub-Signature-256)")
			} else if !headerName.MatchString(h.Header) {
				v.add(path+".hmac.header", fmt.Sprintf("%q is not an HTTP header name", h.Header))
			}
			if h.Secret == "" {
				v.add(path+".hmac.secret", "required")
			}
			v.oneOf(path+".hmac.algorithm", h.Algorithm, "sha256", "sha1", "sha512")
		}
	}
	if in.OutboxLimit < 1 {
		v.add("ingest.outbox_limit", "must be at least 1")
	}
	v.duration("ingest.seen_ttl", in.SeenTTL)
	if in.SeenMax < 1000 {
		v.add("ingest.seen_max", "must be at least 1000 (each remembered id takes about 40 bytes of memory)")
	}
	v.duration("ingest.timestamp_tolerance", in.TimestampTolerance)
}

func (c *Config) validatePoller(v validator) {
	p := &c.Poller
	v.schedule("poller.vms.schedule", p.VMs.Schedule)
	v.schedule("poller.builds.schedule", p.Builds.Schedule)
	v.duration("poller.builds.stuck_after", p.Builds.StuckAfter)
	v.schedule("poller.logs.schedule", p.Logs.Schedule)
	if p.Logs.Batch < 50 || p.Logs.Batch > 1000 {
		v.add("poller.logs.batch", fmt.Sprintf("%d is out of range; the Cakework API takes 50 to 1000", p.Logs.Batch))
	}
	if p.Logs.MaxPages < 1 {
		v.add("poller.logs.max_pages", "must be at least 1")
	}
	for i, id := range p.WatchBuilds {
		if !resourceID.MatchString(id) {
			v.add(fmt.Sprintf("poller.watch_builds[%d]", i), fmt.Sprintf("%s is not a build id; ids are 1 to 128 of A-Z, a-z, 0-9, _ and -", echo(id, false)))
		}
	}
	if p.Jitter < 0 {
		v.add("poller.jitter", "must not be negative (0 turns it off)")
	}
	v.duration("poller.shutdown_timeout", p.ShutdownTimeout)
}

func (c *Config) validateSinks(v validator) {
	names := map[string]string{}
	name := func(path, n string) {
		switch {
		case n == "":
			v.add(path+".name", "required; it names the sink's durable consumer")
		case !sinkName.MatchString(n):
			v.add(path+".name", fmt.Sprintf("%s is not a sink name; use 1 to 64 of A-Z, a-z, 0-9, _ and -", echo(n, false)))
		case reservedSinkNames[n]:
			v.add(path+".name", fmt.Sprintf("%q is reserved; choose another name", n))
		case names[n] != "":
			v.add(path+".name", fmt.Sprintf("%q is already used by %s; sink names must be unique across all sinks", n, names[n]))
		default:
			names[n] = path
		}
	}
	label := func(path, n string) string {
		if n == "" {
			return path
		}
		return fmt.Sprintf("%s (%s)", path, n)
	}

	for i := range c.Sinks.Slack {
		s := &c.Sinks.Slack[i]
		path := fmt.Sprintf("sinks.slack[%d]", i)
		name(path, s.Name)
		switch {
		case s.Token == "" && s.WebhookURL == "":
			v.add(label(path, s.Name), "set token (a bot token) or webhook_url (an incoming webhook)")
		case s.Token != "" && s.WebhookURL != "":
			v.add(label(path, s.Name), "set token or webhook_url, not both")
		case s.Token != "" && s.Channel == "":
			v.add(path+".channel", `required with a bot token (like "#deploys")`)
		}
		if s.WebhookURL != "" {
			v.httpURL(path+".webhook_url", s.WebhookURL, urlOpts{httpsOnly: true})
		}
		if s.APIURL != "" {
			v.httpURL(path+".api_url", s.APIURL, urlOpts{})
		}
		v.events(path+".events", s.Events)
		if s.Concurrency < 1 {
			v.add(path+".concurrency", "must be at least 1")
		}
		v.retry(path+".retry", s.Retry)
		if s.Flood.Threshold < 1 {
			v.add(path+".flood.threshold", "must be at least 1")
		}
		v.duration(path+".flood.window", s.Flood.Window)
		// The Slack sink parses its templates with the same function, so
		// check-config and serve accept the same ones.
		for k, text := range s.Templates {
			kp := fmt.Sprintf("%s.templates[%q]", path, k)
			if !eventGlob.MatchString(k) {
				v.add(kp, "the key must be a short event type like build.failed")
				continue
			}
			if _, err := headline.Parse(map[string]string{k: text}); err != nil {
				v.add(kp, strings.TrimPrefix(err.Error(), fmt.Sprintf("templates[%q]: ", k)))
			}
		}
	}
	for i := range c.Sinks.HTTP {
		h := &c.Sinks.HTTP[i]
		path := fmt.Sprintf("sinks.http[%d]", i)
		name(path, h.Name)
		if h.URL == "" {
			v.add(path+".url", "required")
		} else {
			v.httpURL(path+".url", h.URL, urlOpts{})
		}
		v.whsec(path+".secret", h.Secret, "")
		v.events(path+".events", h.Events)
		for k, val := range h.Headers {
			kp := fmt.Sprintf("%s.headers[%q]", path, k)
			if !headerName.MatchString(k) {
				v.add(kp, "not an HTTP header name")
			}
			if strings.ContainsAny(val, "\r\n\x00") {
				v.add(kp, "the value must not contain line breaks")
			}
		}
		v.duration(path+".timeout", h.Timeout)
		if h.Concurrency < 1 {
			v.add(path+".concurrency", "must be at least 1")
		}
		v.retry(path+".retry", h.Retry)
	}

	a := &c.Sinks.Autostop
	v.duration("sinks.autostop.idle_after", a.IdleAfter)
	v.duration("sinks.autostop.warn_before", a.WarnBefore)
	if a.WarnBefore > 0 && a.IdleAfter > 0 && a.WarnBefore >= a.IdleAfter {
		v.add("sinks.autostop.warn_before", "must be shorter than idle_after")
	}
	if a.MaxStopsPerMinute < 1 {
		v.add("sinks.autostop.max_stops_per_minute", "must be at least 1")
	}
	if a.Check <= 0 {
		v.add("sinks.autostop.check", "must be a duration more than 0, like 15s: the longest auto-stop goes without evaluating idle clocks (they are also evaluated when a warning or stop is due and after every poll)")
	}
	for i, s := range a.ExcludeImages {
		if strings.TrimSpace(s) == "" {
			v.add(fmt.Sprintf("sinks.autostop.exclude_images[%d]", i), "must not be empty")
		}
	}
	for i, s := range a.CachedVMs {
		if !resourceID.MatchString(s) {
			v.add(fmt.Sprintf("sinks.autostop.cached_vms[%d]", i), fmt.Sprintf("%s is not a VM id; ids are 1 to 128 of A-Z, a-z, 0-9, _ and -", echo(s, false)))
		}
	}
	if a.Enabled && c.Cakework.APIKey == "" {
		v.add("sinks.autostop.enabled", "needs cakework.api_key (or "+EnvAPIKey+") to stop VMs")
	}
}

type validator struct{ p *Problems }

func (v validator) add(path, msg string) { v.p.add(path, msg) }

func (v validator) oneOf(path, s string, allowed ...string) {
	for _, a := range allowed {
		if s == a {
			return
		}
	}
	v.add(path, fmt.Sprintf("%s is not one of %s", echo(s, false), strings.Join(allowed, ", ")))
}

func (v validator) nonEmpty(path, s string) {
	if strings.TrimSpace(s) == "" {
		v.add(path, "must not be empty")
	}
}

func (v validator) positive(path string, n int64) {
	if n <= 0 {
		v.add(path, "must be more than 0")
	}
}

func (v validator) duration(path string, d time.Duration) {
	if d <= 0 {
		v.add(path, "must be a duration more than 0, like 30s")
	}
}

func (v validator) retry(path string, r Retry) {
	v.duration(path+".initial", r.Initial)
	v.duration(path+".max_interval", r.MaxInterval)
	if r.Initial > 0 && r.MaxInterval > 0 && r.Initial > r.MaxInterval {
		v.add(path+".initial", "must not be longer than max_interval")
	}
	if r.MaxAttempts < 1 {
		v.add(path+".max_attempts", "must be at least 1")
	}
}

func (v validator) schedule(path, spec string) {
	if _, err := ParseSchedule(spec); err != nil {
		v.add(path, fmt.Sprintf(`%s is not a schedule (%v); use "@every 15s" or a cron expression like "*/5 * * * *"`, echo(spec, false), err))
	}
}

func (v validator) events(path string, globs []string) {
	for i, g := range globs {
		if !eventGlob.MatchString(g) {
			v.add(fmt.Sprintf("%s[%d]", path, i), fmt.Sprintf(`%s is not an event filter; use short types like "build.failed", "vm.*" or "*"`, echo(g, false)))
			continue
		}
		// The sinks build their filters with the same check, so
		// check-config and serve agree on what matches nothing.
		if err := event.CheckGlob(g); err != nil {
			v.add(fmt.Sprintf("%s[%d]", path, i), err.Error())
		}
	}
}

// whsec checks a Standard Webhooks secret, if set: "whsec_" then base64.
func (v validator) whsec(path, s, hint string) {
	if s == "" {
		return
	}
	b64, ok := strings.CutPrefix(s, "whsec_")
	if ok {
		key, err := base64.StdEncoding.DecodeString(b64)
		ok = err == nil && len(key) > 0
	}
	if !ok {
		msg := "not a Standard Webhooks secret; it must be whsec_ followed by base64 (like whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw)"
		if hint != "" {
			msg += "; " + hint
		}
		v.add(path, msg)
	}
}

func (v validator) hostPort(path, s string, allowEmpty bool) {
	if s == "" && allowEmpty {
		return
	}
	host, port, err := net.SplitHostPort(s)
	if err == nil {
		n, perr := strconv.Atoi(port)
		if perr != nil || n < 0 || n > 65535 {
			err = fmt.Errorf("bad port")
		}
	}
	if err == nil && strings.ContainsAny(host, " /") {
		err = fmt.Errorf("bad host")
	}
	if err != nil {
		v.add(path, fmt.Sprintf("%s is not host:port; use an address like 127.0.0.1:8080", echo(s, false)))
	}
}

type urlOpts struct {
	// httpsOnly allows http:// only for loopback hosts (tests).
	httpsOnly bool
}

// httpURL checks an absolute http(s) URL. The URL is never quoted: it may
// hold credentials or be a secret itself (a Slack webhook URL).
func (v validator) httpURL(path, s string, o urlOpts) {
	u, err := url.Parse(s)
	switch {
	case err != nil || u.Host == "" || u.Hostname() == "":
		v.add(path, "not an absolute URL; use https://host/path")
	case u.Scheme == "https":
	case u.Scheme == "http" && (!o.httpsOnly || isLoopbackHost(u.Hostname())):
	case u.Scheme == "http":
		v.add(path, "must be https (http is allowed only for localhost)")
	default:
		v.add(path, "must be an http or https URL")
	}
}

func isLoopback(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	return err == nil && isLoopbackHost(host)
}

func isLoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func validSubjectPrefix(s string) bool {
	if s == "" {
		return false
	}
	for _, tok := range strings.Split(s, ".") {
		if tok == "" || strings.ContainsAny(tok, "*> \t\r\n") || hasControl(tok) {
			return false
		}
	}
	return true
}

func hasControl(s string) bool {
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return true
		}
	}
	return false
}
