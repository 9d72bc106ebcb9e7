package httpcb

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/config"
)

// Sink-local defaults, applied when a config was built in code rather than
// loaded (config.Load applies the same ones).
const (
	DefaultTimeout     = 15 * time.Second
	DefaultConcurrency = 4
)

// withDefaults fills what the config left empty.
func withDefaults(c config.HTTPCB) config.HTTPCB {
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	if c.Concurrency < 1 {
		c.Concurrency = DefaultConcurrency
	}
	if len(c.Events) == 0 {
		c.Events = []string{"*"}
	}
	return c
}

// validate checks what the sink needs to run. Its errors never quote the
// secret, a header value, or the URL's credentials or query.
func validate(c config.HTTPCB) error {
	var errs []error
	if c.Name == "" {
		errs = append(errs, errors.New("name: required"))
	}
	u, err := url.Parse(c.URL)
	switch {
	case c.URL == "":
		errs = append(errs, errors.New("url: required"))
	case err != nil:
		errs = append(errs, errors.New("url: not a URL"))
	case u.Scheme != "http" && u.Scheme != "https":
		errs = append(errs, fmt.Errorf("url: scheme %q: use http or https", u.Scheme))
	case u.Host == "":
		errs = append(errs, errors.New("url: no host"))
	}
	if c.Secret != "" {
		b64, ok := strings.CutPrefix(c.Secret, "whsec_")
		if _, err := base64.StdEncoding.DecodeString(b64); !ok || err != nil || b64 == "" {
			errs = append(errs, errors.New("secret: not a Standard Webhooks secret; it must be whsec_ followed by base64"))
		}
	}
	for k, v := range c.Headers {
		if strings.ContainsAny(v, "\r\n\x00") {
			errs = append(errs, fmt.Errorf("headers[%q]: the value must not contain line breaks", k))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("sinks.http %s: %w", c.Name, err)
	}
	return nil
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
