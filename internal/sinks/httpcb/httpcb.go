// Package httpcb is the HTTP callback sink: it POSTs each event as a
// CloudEvent (application/cloudevents+json) signed per Standard Webhooks.
//
// It sends once and classifies the answer; retries, ordering and dead
// letters are the sinks framework's job:
//   - 2xx: delivered.
//   - 408, 425, 429, 5xx, network errors and timeouts: retry, after the
//     Retry-After the endpoint gave (seconds or HTTP date) if any.
//   - 410 Gone: dead-letter and disable the sink until restart.
//   - anything else (other 4xx, 3xx: redirects are not followed): dead-letter.
//
// Receivers dedupe on webhook-id, which is the event id: a redelivery or a
// replay carries the same id.
package httpcb

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/cakework-relay/cakework-relay/internal/event"
	"github.com/cakework-relay/cakework-relay/internal/sinks"
)

// ContentType is the structured-mode CloudEvents media type.
const ContentType = "application/cloudevents+json"

// Options are the sink's dependencies.
type Options struct {
	// Logger is the sink's, scoped to it by the caller.
	Logger *slog.Logger
	// Now stamps webhook-timestamp. Default time.Now (receivers check it
	// against their wall clock).
	Now func() time.Time
	// Transport overrides the sink's own connection pool (tests).
	Transport http.RoundTripper
	// UserAgent, default "cakework-relay".
	UserAgent string
	// ConfigPath names the entry in errors ("sinks.http[0]"). Default
	// "sinks.http".
	ConfigPath string
}

// Sender posts events to one endpoint. It is safe for concurrent use.
type Sender struct {
	cfg     Config
	target  string // safe to show
	wh      *standardwebhooks.Webhook
	client  *http.Client
	headers http.Header
	now     func() time.Time
	ua      string
	log     *slog.Logger
}

// New builds the sender for one sinks.http entry: one http.Client with its
// own Transport, so connections to the endpoint are reused across events.
func New(c Config, o Options) (*Sender, error) {
	if o.ConfigPath == "" {
		o.ConfigPath = "sinks.http"
	}
	c = c.WithDefaults()
	if err := c.check(o.ConfigPath); err != nil {
		return nil, err
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.UserAgent == "" {
		o.UserAgent = "cakework-relay"
	}
	s := &Sender{cfg: c, target: safeURL(c.URL), now: o.Now, ua: o.UserAgent, log: o.Logger}
	if c.Secret != "" {
		wh, err := standardwebhooks.NewWebhook(c.Secret)
		if err != nil {
			// The library's error could quote part of the secret.
			return nil, fmt.Errorf("sinks.http %s: secret: not a Standard Webhooks secret", c.Name)
		}
		s.wh = wh
	} else {
		s.log.Warn("http sink has no secret: callbacks are not signed; set secret (whsec_...) so the receiver can verify them", "url", s.target)
	}
	s.headers = http.Header{}
	for k, v := range c.Headers {
		s.headers.Set(k, v)
	}
	rt := o.Transport
	if rt == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		// One idle connection per lane, plus room for replays.
		t.MaxIdleConnsPerHost = c.Concurrency + 2
		t.ResponseHeaderTimeout = c.Timeout
		rt = t
	}
	s.client = &http.Client{
		Transport: rt,
		// A redirected POST would be resent as a GET or to an address
		// nobody configured: report it instead.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return s, nil
}

// SinkOptions are the framework options this entry asks for (name, kind,
// events, concurrency, retry). The app adds the shared dependencies.
func (s *Sender) SinkOptions() sinks.Options {
	return sinks.Options{Name: s.cfg.Name, Kind: "http", Endpoint: safeURL(s.cfg.URL), Events: s.cfg.Events, Concurrency: s.cfg.Concurrency, Retry: s.cfg.Retry}
}

// Close drops idle connections (sinks.Closer).
func (s *Sender) Close(context.Context) error {
	s.client.CloseIdleConnections()
	return nil
}

// Send posts e once and says whether a retry could help.
func (s *Sender) Send(ctx context.Context, e event.Event) sinks.Result {
	body, err := json.Marshal(e)
	if err != nil {
		return sinks.Fail(fmt.Errorf("encode event %s: %w", e.ID, err))
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return sinks.Fail(fmt.Errorf("POST %s: cannot build the request", s.target))
	}
	for k, v := range s.headers {
		req.Header[k] = v
	}
	ts := s.now()
	req.Header.Set("Content-Type", ContentType)
	req.Header.Set("User-Agent", s.ua)
	req.Header.Set(standardwebhooks.HeaderWebhookID, e.ID)
	req.Header.Set(standardwebhooks.HeaderWebhookTimestamp, strconv.FormatInt(ts.Unix(), 10))
	if s.wh != nil {
		sig, err := s.wh.Sign(e.ID, ts, body)
		if err != nil {
			return sinks.Fail(fmt.Errorf("sign event %s failed", e.ID))
		}
		req.Header.Set(standardwebhooks.HeaderWebhookSignature, sig)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return sinks.RetryLater(s.netErr(ctx, err), 0)
	}
	snippet := drain(resp.Body)
	code := resp.StatusCode
	if code >= 200 && code < 300 {
		return sinks.Delivered()
	}
	why := fmt.Sprintf("POST %s: %s", s.target, resp.Status)
	if snippet != "" {
		why += ": " + snippet
	}
	switch {
	case code == http.StatusGone:
		return sinks.FailAndDisable(fmt.Errorf("%s (410 Gone: the endpoint says it no longer exists)", why))
	case code == http.StatusRequestTimeout, code == http.StatusTooEarly, code == http.StatusTooManyRequests, code >= 500:
		return sinks.RetryLater(errors.New(why), retryAfter(resp.Header.Get("Retry-After"), s.now()))
	case code >= 300 && code < 400:
		return sinks.Fail(fmt.Errorf("%s (redirects are not followed; set the url to the final address)", why))
	default:
		return sinks.Fail(errors.New(why))
	}
}

// netErr describes a transport failure without the URL (url.Error quotes
// it whole, query and credentials included).
func (s *Sender) netErr(ctx context.Context, err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	if errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil {
		return fmt.Errorf("POST %s: no answer within %s (timeout)", s.target, s.cfg.Timeout)
	}
	return fmt.Errorf("POST %s: %w", s.target, err)
}

// drain reads (a bounded part of) the body so the connection can be reused,
// closes it, and returns its start for error messages.
func drain(body io.ReadCloser) string {
	defer body.Close()
	buf := make([]byte, 256)
	n, _ := io.ReadFull(body, buf)
	_, _ = io.Copy(io.Discard, io.LimitReader(body, 64<<10))
	s := strings.Map(func(r rune) rune {
		if unicode.IsPrint(r) {
			return r
		}
		return ' '
	}, string(buf[:n]))
	s = strings.TrimSpace(s)
	if n == len(buf) {
		s += "..."
	}
	return s
}

// retryAfter parses Retry-After: delay-seconds or an HTTP date.
func retryAfter(h string, now time.Time) time.Duration {
	h = strings.TrimSpace(h)
	if h == "" {
		return 0
	}
	if n, err := strconv.ParseInt(h, 10, 64); err == nil {
		if n <= 0 {
			return 0
		}
		return time.Duration(min(n, int64(24*time.Hour/time.Second))) * time.Second
	}
	if t, err := http.ParseTime(h); err == nil {
		if d := t.Sub(now); d > 0 {
			return d
		}
	}
	return 0
}
