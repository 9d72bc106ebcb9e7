package cakework

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/clock"
)

// Backoff computes exponential delays with jitter for one resource. The
// client itself never loops; callers keep one Backoff per resource (a VM, a
// build's log stream) so one failing resource does not slow the others.
// The zero value is usable (1s initial, 2x, 5m cap, 50% jitter). Not safe for
// concurrent use.
type Backoff struct {
	Initial    time.Duration  // first delay; default 1s
	Max        time.Duration  // cap; default 5m
	Multiplier float64        // growth per attempt; default 2
	Jitter     float64        // fraction of each delay that is random, 0–1; default 0.5
	Rand       func() float64 // [0,1); default math/rand/v2

	attempt int
}

// Next returns the delay before the next attempt and counts the attempt.
// The delay is d*(1-Jitter) + d*Jitter*rand, with d = Initial*Multiplier^n
// capped at Max.
func (b *Backoff) Next() time.Duration {
	initial, maxD, mult, jitter := b.Initial, b.Max, b.Multiplier, b.Jitter
	if initial <= 0 {
		initial = time.Second
	}
	if maxD <= 0 {
		maxD = 5 * time.Minute
	}
	if mult < 1 {
		mult = 2
	}
	if jitter <= 0 || jitter > 1 {
		jitter = 0.5
	}
	rnd := b.Rand
	if rnd == nil {
		rnd = rand.Float64
	}
	d := float64(initial)
	for i := 0; i < b.attempt && d < float64(maxD); i++ {
		d *= mult
	}
	d = min(d, float64(maxD))
	b.attempt++
	return time.Duration(d*(1-jitter) + d*jitter*rnd())
}

// NextFor is Next, but never shorter than the server's Retry-After in err.
func (b *Backoff) NextFor(err error) time.Duration {
	return max(b.Next(), RetryAfter(err))
}

// Attempts is how many delays Next has handed out since the last Reset.
func (b *Backoff) Attempts() int { return b.attempt }

// Reset starts over after a success.
func (b *Backoff) Reset() { b.attempt = 0 }

// Retry calls fn until it succeeds, fails with an error IsRetryable rejects,
// or maxAttempts calls have been made, sleeping b.NextFor(err) on clk between
// attempts. It returns fn's last error.
func Retry(ctx context.Context, clk clock.Clock, b *Backoff, maxAttempts int, fn func(context.Context) error) error {
	if clk == nil {
		clk = clock.Real{}
	}
	if b == nil {
		b = &Backoff{}
	}
	var err error
	for attempt := 1; ; attempt++ {
		if err = fn(ctx); err == nil || !IsRetryable(err) || attempt >= maxAttempts {
			return err
		}
		if serr := clock.Sleep(ctx, clk, b.NextFor(err)); serr != nil {
			return errors.Join(err, serr)
		}
	}
}
