package sinks

import (
	"math/rand/v2"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/config"
)

// maxRetryAfter caps a target's Retry-After so one bad header cannot park a
// lane for days.
const maxRetryAfter = time.Hour

// backoff is the wait after the attempt-th failed attempt (1-based):
// Initial doubling up to MaxInterval, with "equal jitter" (a uniform draw in
// the upper half) so lanes that failed together don't retry together. A
// sink's own delay wins when given.
func backoff(r config.Retry, attempt int, after time.Duration) time.Duration {
	if after > 0 {
		return min(after, maxRetryAfter)
	}
	d := r.Initial
	for i := 1; i < attempt && d < r.MaxInterval; i++ {
		d *= 2
	}
	d = min(d, r.MaxInterval)
	if d <= 1 {
		return d
	}
	half := d / 2
	return half + rand.N(d-half+1)
}
