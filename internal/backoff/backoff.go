// Package backoff is the relay's one retry schedule: a wait that grows
// exponentially from Initial up to Max, with jitter, and that honours a
// delay the other side asked for (Retry-After).
//
// Guarantees:
//   - Delay(n) is pure: the same Backoff and draw give the same wait, so
//     callers that persist an attempt count (sinks, Slack summaries) resume
//     their schedule after a restart.
//   - Waits never exceed Max, except After, which never waits less than the
//     server asked for: a client that retries earlier is throttled again.
//   - Jitter only shortens a wait: with the default ("equal jitter") it is
//     drawn from the upper half [d/2, d), so callers that failed together
//     spread out but none retries sooner than half its schedule.
//
// It only computes waits. Callers wait with clock.Sleep on their injected
// clock.Clock, so tests move a clock.Fake instead of sleeping.
package backoff

import (
	"math/rand/v2"
	"time"
)

// Defaults of a zero Backoff.
const (
	DefaultInitial    = time.Second
	DefaultMax        = 5 * time.Minute
	DefaultMultiplier = 2
	DefaultJitter     = 0.5
)

// Backoff is an exponential schedule with jitter. The zero value is usable
// (1s doubling to 5m, equal jitter). Its fields are a template that may be
// copied; the attempt counter used by Next is not safe for concurrent use,
// but Delay and After are.
type Backoff struct {
	// Initial is the wait after the first failure. Default 1s.
	Initial time.Duration
	// Max caps every wait. Default 5m.
	Max time.Duration
	// Multiplier is the growth per failure; below 1 means the default 2.
	Multiplier float64
	// Jitter is the fraction of each wait that is random: the wait is
	// drawn from [d*(1-Jitter), d). 0 means the default 0.5, a negative
	// value means none (a fixed schedule), above 1 means 1.
	Jitter float64
	// Rand returns a number in [0,1). Default math/rand/v2; tests fix it.
	Rand func() float64

	attempt int
}

// Delay is the wait after the n-th consecutive failure (1-based; n < 1
// counts as 1): Initial*Multiplier^(n-1), capped at Max, jittered.
func (b *Backoff) Delay(n int) time.Duration {
	initial, maxD, mult, jitter := b.Initial, b.Max, b.Multiplier, b.Jitter
	if initial <= 0 {
		initial = DefaultInitial
	}
	if maxD <= 0 {
		maxD = DefaultMax
	}
	if mult < 1 {
		mult = DefaultMultiplier
	}
	switch {
	case jitter == 0:
		jitter = DefaultJitter
	case jitter < 0:
		jitter = 0
	case jitter > 1:
		jitter = 1
	}
	d := float64(initial)
	for i := 1; i < n && d < float64(maxD); i++ {
		d *= mult
	}
	d = min(d, float64(maxD))
	if jitter == 0 {
		return time.Duration(d)
	}
	rnd := b.Rand
	if rnd == nil {
		rnd = rand.Float64
	}
	return time.Duration(d*(1-jitter) + d*jitter*rnd())
}

// After is Delay(n), but never less than server, the least wait the other
// side asked for (Retry-After; 0 for none).
func (b *Backoff) After(n int, server time.Duration) time.Duration {
	return max(b.Delay(n), server)
}

// Next counts a failure and returns the wait before the next attempt.
func (b *Backoff) Next() time.Duration {
	b.attempt++
	return b.Delay(b.attempt)
}

// NextAtLeast is Next, but never less than server (see After).
func (b *Backoff) NextAtLeast(server time.Duration) time.Duration {
	return max(b.Next(), server)
}

// Attempts is how many failures Next counted since the last Reset.
func (b *Backoff) Attempts() int { return b.attempt }

// Reset starts the schedule over, after a success.
func (b *Backoff) Reset() { b.attempt = 0 }
