// Package confcheck is how configuration sections report what is wrong with
// them. Each component owns its section's struct, defaults and Validate;
// Validate reports into a Checker, which knows the key path of the section,
// so a section says "channel: required" and the relay's config reports
// "sinks.slack[0].channel: required". The helpers check the value kinds that
// several sections share (durations, host:port, URLs, Standard Webhooks
// secrets), with one wording for each.
//
// Problems never quote a secret or a URL: a value is quoted only through
// Echo, and only by a check that knows the value is not secret.
package confcheck

import (
	"encoding/base64"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Problem is one thing wrong with a configuration. Path is the key path
// (sinks.http[0].url); it is empty for problems with the file as a whole.
// Msg says what is wrong and, where it can, how to fix it. Neither ever
// contains the value of a secret.
type Problem struct {
	Path string
	Msg  string
}

func (p Problem) String() string {
	if p.Path == "" {
		return p.Msg
	}
	return p.Path + ": " + p.Msg
}

// Problems is every problem found in a configuration, in the order found.
type Problems []Problem

// Error lists the problems one per line, as "key.path: what is wrong".
func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// Add appends a problem at path.
func (ps *Problems) Add(path, msg string) {
	*ps = append(*ps, Problem{Path: path, Msg: msg})
}

// Checker collects problems for one section of a configuration. Sections
// nested in it share its list. The zero value is not usable; use New.
type Checker struct {
	list  *Problems
	path  string // the section's key path, "" at the top
	label string // the section as problems about it as a whole name it
}

// New is a Checker for a section at path ("" for a section checked on its
// own, whose problems then carry paths relative to it).
func New(path string) *Checker {
	return &Checker{list: new(Problems), path: path, label: path}
}

// At is the Checker of the subsection key ("retry", "[0]", "hmac"), which
// adds to the same list.
func (c *Checker) At(key string) *Checker {
	p := c.Path(key)
	return &Checker{list: c.list, path: p, label: p}
}

// Named is c with the section's name in problems about the section as a
// whole: "sinks.slack[0] (alerts): set token or webhook_url".
func (c *Checker) Named(name string) *Checker {
	n := *c
	if name != "" {
		n.label = strings.TrimSpace(fmt.Sprintf("%s (%s)", c.path, name))
	}
	return &n
}

// Path is the full key path of key in this section; "" is the section.
func (c *Checker) Path(key string) string {
	switch {
	case key == "":
		return c.path
	case c.path == "" || strings.HasPrefix(key, "["):
		return c.path + key
	}
	return c.path + "." + key
}

// Add reports msg at key ("" is the section as a whole, under its label).
func (c *Checker) Add(key, msg string) {
	p := c.label
	if key != "" {
		p = c.Path(key)
	}
	c.list.Add(p, msg)
}

// Problems is what was reported so far, by this Checker and every other
// that shares its list.
func (c *Checker) Problems() Problems { return *c.list }

// Err is the problems as an error (Problems), or nil when there are none.
func (c *Checker) Err() error {
	if len(*c.list) == 0 {
		return nil
	}
	return *c.list
}

// Check runs validate on a fresh Checker at path: how a constructor checks
// the section it is given. The error reads as Problems and wraps them
// (errors.As gets at the list); unlike a bare Problems, it is comparable,
// so errors.Is works on it.
func Check(path string, validate func(*Checker)) error {
	c := New(path)
	validate(c)
	if err := c.Err(); err != nil {
		return fmt.Errorf("%w", err)
	}
	return nil
}

// maxEcho is the longest value a problem quotes: a longer one could be a
// secret put under the wrong key, and is never shown, not even in part.
const maxEcho = 24

// Echo quotes a value for a problem, unless it is secret or long enough
// to be one.
func Echo(s string, secret bool) string {
	if secret {
		return "a value (not shown: secret)"
	}
	if len(s) > maxEcho {
		return fmt.Sprintf("a value of %d characters (not shown: it could be a secret)", len(s))
	}
	return strconv.Quote(s)
}

// Shown says whether Echo shows s (not secret): an error that quotes a
// value itself (a parser's) is left out when it is not.
func Shown(s string) bool { return len(s) <= maxEcho }

// OneOf checks that s is one of allowed.
func (c *Checker) OneOf(key, s string, allowed ...string) {
	for _, a := range allowed {
		if s == a {
			return
		}
	}
	c.Add(key, fmt.Sprintf("%s is not one of %s", Echo(s, false), strings.Join(allowed, ", ")))
}

// NonEmpty checks that s has more than white space.
func (c *Checker) NonEmpty(key, s string) {
	if strings.TrimSpace(s) == "" {
		c.Add(key, "must not be empty")
	}
}

// Positive checks that n is more than 0.
func (c *Checker) Positive(key string, n int64) {
	if n <= 0 {
		c.Add(key, "must be more than 0")
	}
}

// AtLeast1 checks a count that must be at least 1.
func (c *Checker) AtLeast1(key string, n int) {
	if n < 1 {
		c.Add(key, "must be at least 1")
	}
}

// Duration checks that d is more than 0.
func (c *Checker) Duration(key string, d time.Duration) {
	if d <= 0 {
		c.Add(key, "must be a duration more than 0, like 30s")
	}
}

// Whsec checks a Standard Webhooks secret, if set: "whsec_" then base64.
// hint, if any, is added to the message.
func (c *Checker) Whsec(key, s, hint string) {
	if s == "" {
		return
	}
	b64, ok := strings.CutPrefix(s, "whsec_")
	if ok {
		k, err := base64.StdEncoding.DecodeString(b64)
		ok = err == nil && len(k) > 0
	}
	if !ok {
		msg := "not a Standard Webhooks secret; it must be whsec_ followed by base64 (like whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw)"
		if hint != "" {
			msg += "; " + hint
		}
		c.Add(key, msg)
	}
}

// HostPort checks a listen address; "" is allowed when allowEmpty.
func (c *Checker) HostPort(key, s string, allowEmpty bool) {
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
		c.Add(key, fmt.Sprintf("%s is not host:port; use an address like 127.0.0.1:8080", Echo(s, false)))
	}
}

// HTTPURL checks an absolute http(s) URL. With httpsOnly, http:// is
// allowed only for loopback hosts (tests). The URL is never quoted: it may
// hold credentials or be a secret itself (a Slack webhook URL).
func (c *Checker) HTTPURL(key, s string, httpsOnly bool) {
	u, err := url.Parse(s)
	switch {
	case err != nil || u.Host == "" || u.Hostname() == "":
		c.Add(key, "not an absolute URL; use https://host/path")
	case u.Scheme == "https":
	case u.Scheme == "http" && (!httpsOnly || IsLoopbackHost(u.Hostname())):
	case u.Scheme == "http":
		c.Add(key, "must be https (http is allowed only for localhost)")
	default:
		c.Add(key, "must be an http or https URL")
	}
}

var headerName = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")

// IsHeaderName reports whether s is an HTTP header name (an RFC 9110 token).
func IsHeaderName(s string) bool { return headerName.MatchString(s) }

// IsLoopback reports whether hostport's host is a loopback address.
func IsLoopback(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	return err == nil && IsLoopbackHost(host)
}

// IsLoopbackHost reports whether host is localhost or a loopback IP.
func IsLoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// HasControl reports whether s holds a control character.
func HasControl(s string) bool {
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return true
		}
	}
	return false
}

// Default sets *p to v when *p is the zero value: how an unset field
// without a default tag (see ApplyDefaults) is filled (an empty or zero
// value in a file gets the default, the same as a missing key).
func Default[T comparable](p *T, v T) {
	var zero T
	if *p == zero {
		*p = v
	}
}
