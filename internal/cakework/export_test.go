package cakework

import (
	"context"
	"errors"
	"net/http"
)

// IsRetryable reports errors that a later attempt may not see: 408, 425,
// 429, 5xx, transport failures and timeouts, and malformed 2xx bodies.
// The caller's own cancellation or deadline is never retryable.
//
// The tests check the client's error classification with it. The relay
// itself decides per caller (the poller backs off on any failure and
// honours Retry-After), so it lives here, not in the product.
func IsRetryable(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	if ae, ok := asAPIError(err); ok {
		switch {
		case ae.Status == http.StatusRequestTimeout, ae.Status == http.StatusTooEarly,
			ae.Status == http.StatusTooManyRequests, ae.Status >= 500:
			return true
		}
		return false
	}
	if errors.Is(err, ErrMalformedResponse) {
		return true
	}
	// Only failures the client itself classified as transport errors: a
	// bare context.DeadlineExceeded is the caller's own deadline.
	var te *TransportError
	return errors.As(err, &te)
}
