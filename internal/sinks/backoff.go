package sinks

import (
	"time"

	"github.com/cakework-relay/cakework-relay/internal/backoff"
	"github.com/cakework-relay/cakework-relay/internal/config"
)

// maxRetryAfter caps a target's Retry-After so one bad header cannot park a
// lane for days.
const maxRetryAfter = time.Hour

// retryWait is the wait after the attempt-th failed attempt (1-based):
// Initial doubling up to MaxInterval, with equal jitter (the upper half)
// so lanes that failed together don't retry together; never less than the
// sink's own delay (Retry-After), capped at maxRetryAfter.
func retryWait(r config.Retry, attempt int, after time.Duration) time.Duration {
	b := backoff.Backoff{Initial: r.Initial, Max: r.MaxInterval}
	return b.After(attempt, min(after, maxRetryAfter))
}
