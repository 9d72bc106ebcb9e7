package cakeworksim

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/backoff"
	"github.com/cakework-relay/cakework-relay/internal/cakework"
)

// DefaultWebhookRetryFor is how long a failed build webhook is retried
// when Options.WebhookRetryFor is 0: long enough to ride out a relay
// restart.
const DefaultWebhookRetryFor = 30 * time.Second

// Backoff between attempts at one webhook, on the sim's clock.
const (
	webhookBackoffInitial = 250 * time.Millisecond
	webhookBackoffMax     = 5 * time.Second
)

type pendingWebhook struct {
	buildID, status, imageID string
	attempts                 int
	// firstFail is when the first attempt failed (zero before); retries
	// stop WebhookRetryFor after it.
	firstFail time.Time
	// nextAt is the earliest time of the next attempt.
	nextAt  time.Time
	backoff backoff.Backoff
}

// webhookRequest returns the target and body of a build webhook, in the
// shapes Cakework sent.
func (s *Sim) webhookRequest(p pendingWebhook) (string, []byte, error) {
	target := s.opts.WebhookURL
	var body any
	switch {
	case s.opts.WebhookMode == WebhookSingle && p.status == cakework.BuildSucceeded:
		body = map[string]string{"buildId": p.buildID, "imageId": p.imageID}
	case s.opts.WebhookMode == WebhookSingle:
		body = map[string]string{"buildId": p.buildID, "status": p.status}
	case p.status == cakework.BuildSucceeded:
		body = map[string]string{"buildId": p.buildID, "imageId": p.imageID}
	default:
		body = map[string]string{"buildId": p.buildID}
	}
	if s.opts.WebhookMode != WebhookSingle {
		var err error
		if target, err = SplitWebhookURL(target, p.status); err != nil {
			return "", nil, err
		}
	}
	raw, _ := json.Marshal(body)
	return target, raw, nil
}

// SplitWebhookURL is where WebhookSplit mode posts a build webhook with
// this status: /build/<status> added to base's path, before its query, so
// a token in the URL (?token=...) still reaches the receiver. A fragment
// stays at the end (it is never sent).
func SplitWebhookURL(base, status string) (string, error) {
	u, err := parseWebhookURL(base)
	if err != nil {
		return "", err
	}
	suffix := "/build/" + status
	if u.RawPath != "" {
		u.RawPath = strings.TrimRight(u.RawPath, "/") + suffix
	}
	u.Path = strings.TrimRight(u.Path, "/") + suffix
	return u.String(), nil
}

// CheckWebhookURL reports what is wrong with a WebhookURL, or nil.
func CheckWebhookURL(s string) error {
	_, err := parseWebhookURL(s)
	return err
}

func parseWebhookURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err == nil && (u.Scheme != "http" && u.Scheme != "https" || u.Host == "") {
		err = errors.New("not an http(s) URL with a host")
	}
	if err != nil {
		return nil, fmt.Errorf("webhook URL %q: %w; for example http://127.0.0.1:8080/webhooks/cakework?token=T", s, err)
	}
	return u, nil
}

// deliver posts one webhook. The webhook-id is derived from the build and
// its status, so a redelivery carries the same id and a receiver can dedupe.
func (s *Sim) deliver(ctx context.Context, p pendingWebhook) error {
	target, body, err := s.webhookRequest(p)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "cakework-sim")
	if s.signer != nil {
		id := "msg_" + p.buildID + "_" + p.status
		now := s.clk.Now()
		sig, err := s.signer.Sign(id, now, body)
		if err != nil {
			return err
		}
		req.Header.Set("webhook-id", id)
		req.Header.Set("webhook-timestamp", strconv.FormatInt(now.Unix(), 10))
		req.Header.Set("webhook-signature", sig)
	}
	resp, err := s.hc.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("webhook %s: status %d", target, resp.StatusCode)
	}
	return nil
}

// flushWebhooks delivers the queued webhooks that are due, in order,
// outside the lock. A failed one is tried again after a backoff (on the
// sim's clock) until WebhookRetryFor has passed since its first failure,
// with a last attempt at that deadline; then it is dropped. When ctx ends
// nothing more is sent and what is left stays queued.
func (s *Sim) flushWebhooks(ctx context.Context) {
	s.mu.Lock()
	queue := s.webhooks
	s.webhooks = nil
	s.mu.Unlock()
	var retry []pendingWebhook
	for _, p := range queue {
		if ctx.Err() != nil || s.clk.Now().Before(p.nextAt) {
			retry = append(retry, p)
			continue
		}
		err := s.deliver(ctx, p)
		if err == nil {
			s.log.Debug("sim webhook delivered", "build", p.buildID, "status", p.status)
			continue
		}
		if ctx.Err() != nil {
			retry = append(retry, p) // cut off by shutdown: not the receiver's failure
			continue
		}
		p.attempts++
		now := s.clk.Now()
		if p.firstFail.IsZero() {
			p.firstFail = now
		}
		deadline := p.firstFail.Add(s.opts.WebhookRetryFor)
		if !now.Before(deadline) {
			s.log.Warn("sim webhook dropped", "build", p.buildID, "status", p.status,
				"attempts", p.attempts, "retried_for", now.Sub(p.firstFail), "err", err)
			continue
		}
		if p.backoff.Initial == 0 {
			p.backoff = backoff.Backoff{Initial: webhookBackoffInitial, Max: webhookBackoffMax}
		}
		p.nextAt = now.Add(p.backoff.Next())
		if p.nextAt.After(deadline) {
			p.nextAt = deadline
		}
		s.log.Warn("sim webhook failed; retrying", "build", p.buildID, "status", p.status,
			"attempt", p.attempts, "retry_in", p.nextAt.Sub(now), "err", err)
		retry = append(retry, p)
	}
	if len(retry) > 0 {
		s.mu.Lock()
		s.webhooks = append(retry, s.webhooks...)
		s.mu.Unlock()
	}
}

// PendingWebhooks is how many build webhooks wait for delivery.
func (s *Sim) PendingWebhooks() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.webhooks)
}
