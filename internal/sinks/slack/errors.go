package slack

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"

	goslack "github.com/slack-go/slack"

	"github.com/cakework-relay/cakework-relay/internal/sinks"
)

// authCodes mean the token itself is bad: every call will fail the same
// way, and /readyz says so.
var authCodes = map[string]bool{
	"invalid_auth": true, "not_authed": true, "account_inactive": true,
	"token_revoked": true, "token_expired": true, "no_permission": true,
	"team_access_not_granted": true, "ekm_access_denied": true,
}

// permanentCodes are Slack answers a retry cannot fix.
var permanentCodes = map[string]bool{
	"channel_not_found": true, "not_in_channel": true, "is_archived": true,
	"missing_scope": true, "restricted_action": true, "msg_too_long": true,
	"invalid_blocks": true, "invalid_blocks_format": true, "invalid_arguments": true,
	"too_many_attachments": true, "no_text": true, "cant_update_message": true,
	"edit_window_closed": true, "not_allowed_token_type": true, "method_deprecated": true,
	"invalid_arg_name": true, "invalid_charset": true, "duplicate_channel_not_found": true,
	"channel_is_archived": true, "restricted_action_read_only_channel": true,
	"restricted_action_thread_only_channel": true, "restricted_action_non_threadable_channel": true,
	"team_not_found": true, "as_user_not_supported": true,
}

// slackCode is the error code of a Slack API answer ({"ok":false,
// "error":...}), or "".
func slackCode(err error) string {
	var se goslack.SlackErrorResponse
	if errors.As(err, &se) {
		return se.Err
	}
	return ""
}

// classify turns a failed call into the framework's answer, with an error
// that says what to fix and quotes no secret.
func (s *Sender) classify(ctx context.Context, op string, err error) sinks.Result {
	where := fmt.Sprintf("slack sink %s: %s", s.cfg.Name, op)
	if ctx.Err() != nil {
		return sinks.RetryLater(fmt.Errorf("%s: %w", where, ctx.Err()), 0)
	}
	var rl *goslack.RateLimitedError
	if errors.As(err, &rl) {
		return sinks.RetryLater(fmt.Errorf("%s: rate limited by Slack; retrying after %s", where, rl.RetryAfter), rl.RetryAfter)
	}
	var sc goslack.StatusCodeError
	if errors.As(err, &sc) {
		return s.classifyStatus(where, sc)
	}
	if code := slackCode(err); code != "" {
		e := s.explain(where, code, err)
		switch {
		case authCodes[code]:
			s.setAuthErr(e)
			return sinks.Fail(e)
		case permanentCodes[code]:
			return sinks.Fail(e)
		}
		// Unknown codes (and internal_error, fatal_error, ratelimited...)
		// may pass; the framework's max attempts bounds them.
		return sinks.RetryLater(e, 0)
	}
	return sinks.RetryLater(fmt.Errorf("%s: %s", where, s.scrub(err)), 0)
}

func (s *Sender) classifyStatus(where string, sc goslack.StatusCodeError) sinks.Result {
	code := sc.Code
	e := fmt.Errorf("%s: HTTP %d from Slack", where, code)
	switch {
	case code == 429 || code == 408 || code >= 500:
		return sinks.RetryLater(e, 0)
	case s.webhook && (code == 403 || code == 404 || code == 410):
		// Incoming webhooks answer 404 no_service / channel_not_found, 403
		// action_prohibited, 410 channel_is_archived.
		e = fmt.Errorf("%s: HTTP %d: the incoming webhook was removed, disabled or its channel archived; create a new webhook in the Slack app and set %s.webhook_url", where, code, s.path)
		s.setAuthErr(e)
		return sinks.Fail(e)
	case s.webhook && code == 400:
		return sinks.Fail(fmt.Errorf("%s: HTTP 400: Slack rejected the message (invalid_payload); if %s.templates is set, check its output", where, s.path))
	case code == 401 || code == 403:
		e = fmt.Errorf("%s: HTTP %d: Slack refused the credentials; check %s.token", where, code, s.path)
		s.setAuthErr(e)
		return sinks.Fail(e)
	}
	return sinks.Fail(e)
}

// explain words a Slack error code as a fix.
func (s *Sender) explain(where, code string, err error) error {
	ch := s.cfg.Channel
	switch code {
	case "channel_not_found":
		return fmt.Errorf("%s: channel %s not found (%s); check %s.channel and invite the bot to it", where, ch, code, s.path)
	case "not_in_channel":
		return fmt.Errorf("%s: the bot is not in channel %s (%s); invite it (/invite @your-bot in %s) or change %s.channel", where, ch, code, ch, s.path)
	case "is_archived", "channel_is_archived":
		return fmt.Errorf("%s: channel %s is archived (%s); unarchive it or set %s.channel to another channel", where, ch, code, s.path)
	case "invalid_auth", "not_authed", "token_expired":
		return fmt.Errorf("%s: Slack rejected the bot token (%s); set %s.token to a valid bot token (xoxb-...)", where, code, s.path)
	case "account_inactive", "token_revoked":
		return fmt.Errorf("%s: the bot token was revoked or its app uninstalled (%s); reinstall the Slack app and set %s.token to the new bot token", where, code, s.path)
	case "missing_scope":
		needed := "chat:write"
		var se goslack.SlackErrorResponse
		if errors.As(err, &se) && se.Needed != "" {
			needed = se.Needed
		}
		return fmt.Errorf("%s: the bot token lacks the scope %s (%s); add it to the Slack app, reinstall it, and update %s.token", where, needed, code, s.path)
	case "msg_too_long", "invalid_blocks", "invalid_blocks_format", "no_text":
		return fmt.Errorf("%s: Slack rejected the message (%s); if %s.templates is set, check its output", where, code, s.path)
	}
	return fmt.Errorf("%s: Slack answered %s", where, code)
}

// scrub describes a transport error without the URL (a webhook URL is a
// secret, and url.Error quotes it whole) and with any secret masked.
func (s *Sender) scrub(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return s.redact(err.Error())
}

func (s *Sender) redact(msg string) string {
	for _, secret := range []string{s.cfg.WebhookURL, s.cfg.Token} {
		if secret != "" {
			msg = strings.ReplaceAll(msg, secret, "REDACTED")
		}
	}
	return msg
}
