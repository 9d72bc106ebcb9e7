package cakeworksim

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/cakework"
)

// maxWebhookAttempts bounds redelivery of one build webhook.
const maxWebhookAttempts = 5

type pendingWebhook struct {
	buildID, status, imageID string
	attempts                 int
}

// target and body of a build webhook, in the shapes Cakework sent.
func (s *Sim) webhookRequest(p pendingWebhook) (string, []byte) {
	base := s.opts.WebhookURL
	var body any
	switch {
	case s.opts.WebhookMode == WebhookSingle && p.status == cakework.BuildSucceeded:
		body = map[string]string{"buildId": p.buildID, "imageId": p.imageID}
	case s.opts.WebhookMode == WebhookSingle:
		body = map[string]string{"buildId": p.buildID, "status": p.status}
	case p.status == cakework.BuildSucceeded:
		base = strings.TrimRight(base, "/") + "/build/succeeded"
		body = map[string]string{"buildId": p.buildID, "imageId": p.imageID}
	default:
		base = strings.TrimRight(base, "/") + "/build/failed"
		body = map[string]string{"buildId": p.buildID}
	}
	raw, _ := json.Marshal(body)
	return base, raw
}

// deliver posts one webhook. The webhook-id is derived from the build and
// its status, so a redelivery carries the same id and a receiver can dedupe.
func (s *Sim) deliver(ctx context.Context, p pendingWebhook) error {
	target, body := s.webhookRequest(p)
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

// flushWebhooks delivers queued webhooks in order, outside the lock, and
// requeues failures up to maxWebhookAttempts.
func (s *Sim) flushWebhooks(ctx context.Context) {
	s.mu.Lock()
	queue := s.webhooks
	s.webhooks = nil
	s.mu.Unlock()
	var retry []pendingWebhook
	for _, p := range queue {
		if ctx.Err() != nil {
			retry = append(retry, p)
			continue
		}
		if err := s.deliver(ctx, p); err != nil {
			p.attempts++
			if p.attempts < maxWebhookAttempts {
				retry = append(retry, p)
			}
			s.log.Warn("sim webhook failed", "build", p.buildID, "status", p.status, "attempt", p.attempts, "err", err)
			continue
		}
		s.log.Debug("sim webhook delivered", "build", p.buildID, "status", p.status)
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
