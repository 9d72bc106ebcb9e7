package cakework

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"
)

// APIError is a non-2xx answer from the API.
type APIError struct {
	// Status is the HTTP status code.
	Status int
	// Message is what the server said, from whichever body shape it used
	// ({"error"}, {"message"}, a bare JSON string, plain text), or the
	// status text when the body said nothing.
	Message string
	// Op is the API call, e.g. "stopVM".
	Op string
	// Method and Path locate the request. Path never holds the API key.
	Method, Path string
	// RetryAfter is the server's Retry-After, zero when absent. On a 429
	// without one the client assumes DefaultRetryAfter.
	RetryAfter time.Duration
}

func (e *APIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "cakework %s (%s %s): %d", e.Op, e.Method, e.Path, e.Status)
	if e.AlreadyStopped() {
		b.WriteString(" already stopped")
	}
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	if e.RetryAfter > 0 {
		fmt.Fprintf(&b, " (retry after %s)", e.RetryAfter)
	}
	return b.String()
}

// AlreadyStopped reports a 409 from stopVM or stopCachedVM: the API's way of
// saying the VM was already stopped. Callers treat it as success.
func (e *APIError) AlreadyStopped() bool {
	return e.Status == http.StatusConflict && (e.Op == opStopVM || e.Op == opStopCachedVM)
}

// ErrMalformedResponse marks a 2xx answer whose body could not be decoded
// (garbled, truncated, wrong shape). Nothing from such an answer is returned.
var ErrMalformedResponse = errors.New("malformed response")

// ErrPagingStuck is returned by PageLogs when the server hands back the token
// it was sent with no lines, which would otherwise loop until the budget.
var ErrPagingStuck = errors.New("log paging made no progress")

// TransportError is a request that got no HTTP answer: connection refused,
// reset, or the client's own per-request timeout.
type TransportError struct {
	Op, Method, Path string
	Err              error
}

func (e *TransportError) Error() string {
	return fmt.Sprintf("cakework %s (%s %s): %v", e.Op, e.Method, e.Path, e.Err)
}

func (e *TransportError) Unwrap() error { return e.Err }

func asAPIError(err error) (*APIError, bool) {
	var ae *APIError
	ok := errors.As(err, &ae)
	return ae, ok
}

// IsNotFound reports a 404.
func IsNotFound(err error) bool {
	ae, ok := asAPIError(err)
	return ok && ae.Status == http.StatusNotFound
}

// IsConflict reports a 409.
func IsConflict(err error) bool {
	ae, ok := asAPIError(err)
	return ok && ae.Status == http.StatusConflict
}

// IsAlreadyStopped reports the 409 that stopVM and stopCachedVM answer for a
// VM that is already stopped. Callers treat it as success.
func IsAlreadyStopped(err error) bool {
	ae, ok := asAPIError(err)
	return ok && ae.AlreadyStopped()
}

// IsUnauthorized reports a 401 or 403: the key is wrong, and retrying will
// not help.
func IsUnauthorized(err error) bool {
	ae, ok := asAPIError(err)
	return ok && (ae.Status == http.StatusUnauthorized || ae.Status == http.StatusForbidden)
}

// RetryAfter is the server's requested wait carried by err, or zero.
func RetryAfter(err error) time.Duration {
	if ae, ok := asAPIError(err); ok {
		return ae.RetryAfter
	}
	return 0
}

// DefaultRetryAfter is the pause after a 429 that names no Retry-After.
const DefaultRetryAfter = time.Second

// MaxRetryAfter caps a server's Retry-After so that one bogus header cannot
// freeze the relay for days.
const MaxRetryAfter = 5 * time.Minute

// parseRetryAfter reads delay-seconds or an HTTP date.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	var d time.Duration
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n <= 0 {
			return 0
		}
		if n > int64(MaxRetryAfter/time.Second) {
			return MaxRetryAfter
		}
		d = time.Duration(n) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	if d < 0 {
		return 0
	}
	return min(d, MaxRetryAfter)
}

// maxMessage bounds what an error body contributes to an error string.
const maxMessage = 512

// errorMessage pulls a human message out of whatever error body came back.
// It never fails: an unknown shape yields its text, an empty one "".
func errorMessage(body []byte) string {
	body = []byte(strings.TrimSpace(string(body)))
	if len(body) == 0 {
		return ""
	}
	var msg string
	var s string
	var obj map[string]json.RawMessage
	switch {
	case json.Unmarshal(body, &s) == nil:
		msg = s
	case json.Unmarshal(body, &obj) == nil:
		for _, k := range []string{"error", "message", "msg", "detail"} {
			raw, ok := obj[k]
			if !ok {
				continue
			}
			if json.Unmarshal(raw, &s) == nil {
				msg = s
			} else {
				// {"error": {"message": "..."}} and friends.
				msg = errorMessage(raw)
				if msg == "" {
					msg = string(raw)
				}
			}
			break
		}
		if msg == "" {
			msg = string(body)
		}
	default:
		msg = string(body)
	}
	return tidy(msg)
}

// tidy makes a server message safe to put in a one-line error.
func tidy(s string) string {
	s = strings.Map(func(r rune) rune {
		if r == '\n' || r == '\r' || r == '\t' {
			return ' '
		}
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, s)
	s = strings.ToValidUTF8(strings.TrimSpace(s), "?")
	if len(s) > maxMessage {
		cut := maxMessage
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return s
}

// Hint says what an operator can do about err, in a few words, or "" when
// there is nothing to add. Poller warnings end with it.
func Hint(err error) string {
	var dns *net.DNSError
	var te *TransportError
	ae, isAPI := asAPIError(err)
	switch {
	case err == nil:
		return ""
	case errors.As(err, &dns):
		return "the host name does not resolve: is cakework.url right?"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused: is cakework.url right, and is the API up?"
	case errors.As(err, &te) && errors.Is(err, context.DeadlineExceeded) || isTimeout(err):
		return "no answer within cakework.timeout: is cakework.url reachable from here?"
	case errors.As(err, &te):
		return "the request got no answer: is cakework.url right, and is the API reachable from here?"
	case isAPI && (ae.Status == http.StatusUnauthorized || ae.Status == http.StatusForbidden):
		return "the API key is rejected: set cakework.api_key (or CAKEWORK_API_KEY) to a valid key"
	case isAPI && ae.Status == http.StatusTooManyRequests:
		return "rate limited: lower cakework.rate_limit, or poll less often"
	case isAPI && ae.Status >= 500:
		return "the Cakework API is failing; the relay backs off and retries"
	case isAPI && ae.Status == http.StatusNotFound && ae.Op == opListVMs:
		return "listVMs is not found: is cakework.url the API's base URL?"
	case errors.Is(err, ErrMalformedResponse):
		return "the answer is not the Cakework API's JSON: is cakework.url the API (not a web page or a proxy)?"
	}
	return ""
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
