package slack

import (
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strings"
	"text/template"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/config"
	"github.com/cakework-relay/cakework-relay/internal/event"
)

// Sink-local defaults, applied when a config was built in code rather than
// loaded (config.Load applies the same ones).
const (
	DefaultConcurrency    = 1
	DefaultFloodThreshold = 5
	DefaultFloodWindow    = 10 * time.Second
	// DefaultTimeout bounds one Slack API call.
	DefaultTimeout = 30 * time.Second
	// TailLines is how many log lines a failed build shows.
	TailLines = 20
)

func withDefaults(c config.Slack) config.Slack {
	if c.Concurrency < 1 {
		c.Concurrency = DefaultConcurrency
	}
	if c.Flood.Threshold < 1 {
		c.Flood.Threshold = DefaultFloodThreshold
	}
	if c.Flood.Window <= 0 {
		c.Flood.Window = DefaultFloodWindow
	}
	if len(c.Events) == 0 {
		c.Events = []string{"*"}
	}
	if c.APIURL != "" && !strings.HasSuffix(c.APIURL, "/") {
		// slack.OptionAPIURL appends method names to it.
		c.APIURL += "/"
	}
	return c
}

// validate checks what the sink needs to run. Its errors never quote the
// token or the webhook URL.
func validate(c config.Slack, path string) error {
	var errs []error
	if c.Name == "" {
		errs = append(errs, errors.New("name: required"))
	}
	switch {
	case c.Token == "" && c.WebhookURL == "":
		errs = append(errs, errors.New("set token (a bot token) or webhook_url (an incoming webhook)"))
	case c.Token != "" && c.WebhookURL != "":
		errs = append(errs, errors.New("set token or webhook_url, not both"))
	case c.Token != "" && c.Channel == "":
		errs = append(errs, errors.New(`channel: required with a bot token (like "#deploys")`))
	}
	if c.WebhookURL != "" {
		if u, err := url.Parse(c.WebhookURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			errs = append(errs, errors.New("webhook_url: not an http(s) URL"))
		}
	}
	if c.APIURL != "" {
		if u, err := url.Parse(c.APIURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			errs = append(errs, errors.New("api_url: not an http(s) URL"))
		}
	}
	if _, err := event.NewFilter(c.Events); err != nil {
		errs = append(errs, fmt.Errorf("events: %w", err))
	}
	if _, err := parseTemplates(c.Templates); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%s (%s): %w", path, c.Name, err)
	}
	return nil
}

// templates are the per-type overrides of a message's headline, most
// specific first: exact types, then globs in a stable order.
type templates []namedTemplate

type namedTemplate struct {
	key string
	t   *template.Template
}

// parseTemplates parses each override with text/template's built-in
// functions only (as config validation does) and runs it once on sample
// data, so a misspelled field is an error at startup naming the key, not a
// broken message later.
func parseTemplates(m map[string]string) (templates, error) {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		gi, gj := strings.Contains(keys[i], "*"), strings.Contains(keys[j], "*")
		if gi != gj {
			return !gi
		}
		return keys[i] < keys[j]
	})
	var out templates
	var errs []error
	for _, k := range keys {
		kp := fmt.Sprintf("templates[%q]", k)
		if _, err := event.NewFilter([]string{k}); err != nil {
			errs = append(errs, fmt.Errorf("%s: the key must be a short event type like build.failed", kp))
			continue
		}
		t, err := template.New(k).Option("missingkey=zero").Parse(m[k])
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: not a Go text/template: %w", kp, err))
			continue
		}
		if err := t.Execute(discardWriter{}, sampleTemplateData()); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", kp, err))
			continue
		}
		out = append(out, namedTemplate{k, t})
	}
	return out, errors.Join(errs...)
}

func (ts templates) lookup(shortType string) *template.Template {
	for _, nt := range ts {
		if f, _ := event.NewFilter([]string{nt.key}); f.Match(shortType) {
			return nt.t
		}
	}
	return nil
}

type discardWriter struct{}

func (discardWriter) Write(p []byte) (int, error) { return len(p), nil }
