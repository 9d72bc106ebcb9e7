package cakework

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
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/cakework-relay/cakework-relay/internal/clock"
)

// DefaultBaseURL is the production API.
const DefaultBaseURL = "https://api.cakework.com"

// DefaultTimeout bounds one HTTP exchange when Options.Timeout is zero.
const DefaultTimeout = 30 * time.Second

// maxBody bounds how much of a response is read. A log page of 1000 long
// lines fits many times over; anything larger is treated as garbage.
const maxBody = 32 << 20

// Options configure a Client.
type Options struct {
	// BaseURL is the API root, e.g. https://api.cakework.com or
	// http://127.0.0.1:8081 for the simulator. Empty means DefaultBaseURL.
	// A trailing /v1 is tolerated and dropped.
	BaseURL string
	// APIKey is sent as X-Api-Key. It never appears in errors or logs.
	APIKey string
	// Version goes into User-Agent: cakework-relay/<Version>.
	Version string
	// Timeout bounds each HTTP exchange (not the wait for the rate limiter
	// or a 429 pause). Zero means DefaultTimeout.
	Timeout time.Duration
	// RateLimit is requests per second for all calls together; 0 means
	// unlimited.
	RateLimit float64
	// HTTPClient defaults to a client with no timeout of its own (Timeout
	// above applies per request).
	HTTPClient *http.Client
	// Clock drives the rate limiter and the 429 pause; defaults to the wall
	// clock.
	Clock clock.Clock
	// Logger gets one debug line per request; defaults to discarding.
	Logger *slog.Logger
}

// String keeps the API key out of anything that prints Options.
func (o Options) String() string {
	key := "unset"
	if o.APIKey != "" {
		key = "[redacted]"
	}
	return fmt.Sprintf("cakework.Options{BaseURL: %q, APIKey: %s, Version: %q, Timeout: %s, RateLimit: %g}",
		o.BaseURL, key, o.Version, o.Timeout, o.RateLimit)
}

// Client calls the Cakework API. It is safe for concurrent use; all
// goroutines share one rate limiter and one 429 pause.
type Client struct {
	base    *url.URL
	apiKey  string
	ua      string
	timeout time.Duration
	hc      *http.Client
	clk     clock.Clock
	log     *slog.Logger
	limiter *rate.Limiter // nil: unlimited

	mu          sync.Mutex
	pausedUntil time.Time // set by a 429; every call waits for it
}

// New checks opts and returns a Client.
func New(opts Options) (*Client, error) {
	raw := strings.TrimSpace(opts.BaseURL)
	if raw == "" {
		raw = DefaultBaseURL
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("cakework: base URL %q must be an absolute http(s) URL such as %s", raw, DefaultBaseURL)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("cakework: base URL %q must not have a query or fragment", raw)
	}
	if u.User != nil {
		return nil, errors.New("cakework: base URL must not carry credentials; set the API key instead")
	}
	// Routes carry their /v1; the reference text gives the base with it.
	u.Path = strings.TrimSuffix(strings.TrimSuffix(u.Path, "/"), "/v1")
	if opts.Timeout < 0 {
		return nil, errors.New("cakework: timeout must not be negative")
	}
	if opts.RateLimit < 0 {
		return nil, errors.New("cakework: rate limit must not be negative (0 means unlimited)")
	}
	c := &Client{
		base:    u,
		apiKey:  opts.APIKey,
		timeout: opts.Timeout,
		hc:      opts.HTTPClient,
		clk:     opts.Clock,
		log:     opts.Logger,
	}
	version := opts.Version
	if version == "" {
		version = "dev"
	}
	c.ua = "cakework-relay/" + version
	if c.timeout == 0 {
		c.timeout = DefaultTimeout
	}
	if c.hc == nil {
		c.hc = &http.Client{}
	}
	if c.clk == nil {
		c.clk = clock.Real{}
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if opts.RateLimit > 0 {
		// Burst 1: the limit is a ceiling on the upstream, not an average.
		c.limiter = rate.NewLimiter(rate.Limit(opts.RateLimit), 1)
	}
	return c, nil
}

// BaseURL is the API root the client calls.
func (c *Client) BaseURL() string { return c.base.String() }

// PausedUntil is the end of the current 429 pause, or the zero time.
func (c *Client) PausedUntil() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pausedUntil.After(c.clk.Now()) {
		return c.pausedUntil
	}
	return time.Time{}
}

// pause makes every caller wait until now+d. Pauses only grow.
func (c *Client) pause(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if until := c.clk.Now().Add(d); until.After(c.pausedUntil) {
		c.pausedUntil = until
	}
}

// admit waits out any 429 pause, then for the rate limiter.
func (c *Client) admit(ctx context.Context) error {
	for {
		c.mu.Lock()
		wait := c.pausedUntil.Sub(c.clk.Now())
		c.mu.Unlock()
		if wait <= 0 {
			break
		}
		// Loop: another caller's 429 may have pushed the pause further.
		if err := clock.Sleep(ctx, c.clk, wait); err != nil {
			return err
		}
	}
	if c.limiter == nil {
		return ctx.Err()
	}
	now := c.clk.Now()
	r := c.limiter.ReserveN(now, 1)
	if err := clock.Sleep(ctx, c.clk, r.DelayFrom(now)); err != nil {
		r.CancelAt(c.clk.Now())
		return err
	}
	return nil
}

// call describes one request.
type call struct {
	op     string
	method string
	path   string // already escaped
	query  url.Values
	body   any // JSON-encoded when non-nil
}

// do performs one call and returns the 2xx body. It never retries; a 429 sets
// the shared pause before returning its error.
func (c *Client) do(ctx context.Context, cl call) ([]byte, error) {
	if err := c.admit(ctx); err != nil {
		return nil, fmt.Errorf("cakework %s: %w", cl.op, err)
	}
	target := strings.TrimSuffix(c.base.String(), "/") + cl.path
	if len(cl.query) > 0 {
		target += "?" + cl.query.Encode()
	}
	var body io.Reader
	if cl.body != nil {
		buf, err := json.Marshal(cl.body)
		if err != nil {
			return nil, fmt.Errorf("cakework %s: encode request: %w", cl.op, err)
		}
		body = bytes.NewReader(buf)
	}
	rctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, cl.method, target, body)
	if err != nil {
		return nil, fmt.Errorf("cakework %s: %w", cl.op, err)
	}
	req.Header.Set("X-Api-Key", c.apiKey)
	req.Header.Set("User-Agent", c.ua)
	req.Header.Set("Accept", "application/json")
	if cl.body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	start := time.Now()
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, c.transportErr(ctx, cl, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		return nil, c.transportErr(ctx, cl, fmt.Errorf("read body: %w", err))
	}
	c.log.LogAttrs(ctx, slog.LevelDebug, "cakework call",
		slog.String("op", cl.op), slog.String("method", cl.method), slog.String("path", cl.path),
		slog.Int("status", resp.StatusCode), slog.Duration("took", time.Since(start)))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		ae := &APIError{
			Status:     resp.StatusCode,
			Message:    c.redact(errorMessage(data)),
			Op:         cl.op,
			Method:     cl.method,
			Path:       cl.path,
			RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"), c.clk.Now()),
		}
		if ae.Message == "" {
			ae.Message = http.StatusText(resp.StatusCode)
		}
		if resp.StatusCode == http.StatusTooManyRequests {
			if ae.RetryAfter <= 0 {
				ae.RetryAfter = DefaultRetryAfter
			}
			c.pause(ae.RetryAfter)
			c.log.LogAttrs(ctx, slog.LevelWarn, "cakework rate limited; pausing all calls",
				slog.String("op", cl.op), slog.Duration("retry_after", ae.RetryAfter))
		}
		return nil, ae
	}
	if len(data) > maxBody {
		return nil, c.malformed(cl, errors.New("body too large"))
	}
	return data, nil
}

func (c *Client) transportErr(ctx context.Context, cl call, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		// The caller gave up; that is not the upstream's fault.
		return fmt.Errorf("cakework %s (%s %s): %w", cl.op, cl.method, cl.path, ctxErr)
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		// url.Error repeats the URL; keep only the cause.
		err = ue.Err
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("timed out after %s: %w", c.timeout, err)
		}
	}
	return &TransportError{Op: cl.op, Method: cl.method, Path: cl.path, Err: err}
}

func (c *Client) malformed(cl call, err error) error {
	return fmt.Errorf("cakework %s (%s %s): %w: %s", cl.op, cl.method, cl.path, ErrMalformedResponse, c.redact(tidy(err.Error())))
}

// redact removes the API key from text that came from elsewhere, in case a
// server echoes it.
func (c *Client) redact(s string) string {
	if c.apiKey == "" {
		return s
	}
	return strings.ReplaceAll(s, c.apiKey, "[redacted]")
}

// doJSON performs cl and decodes the 2xx body with dec. On any decode error
// the zero T is returned with an ErrMalformedResponse error.
func doJSON[T any](ctx context.Context, c *Client, cl call, dec func([]byte) (T, error)) (T, error) {
	var zero T
	data, err := c.do(ctx, cl)
	if err != nil {
		return zero, err
	}
	v, err := dec(data)
	if err != nil {
		return zero, c.malformed(cl, err)
	}
	return v, nil
}
