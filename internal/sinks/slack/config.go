package slack

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/config"
	"github.com/cakework-relay/cakework-relay/internal/event"
	"github.com/cakework-relay/cakework-relay/internal/sinks/slack/headline"
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
	if _, err := headline.Parse(c.Templates); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%s (%s): %w", path, c.Name, err)
	}
	return nil
}
