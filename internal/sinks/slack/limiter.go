package slack

import (
	"context"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/cakework-relay/cakework-relay/internal/clock"
)

// channelLimiter keeps writes to each channel at most one per interval,
// on the injected clock. A channel can be known by name ("#deploys") and
// by id ("C123"): alias maps the id Slack answers with to the name used
// first, so both share one limiter.
type channelLimiter struct {
	clock clock.Clock
	every time.Duration

	mu    sync.Mutex
	lims  map[string]*rate.Limiter
	alias map[string]string
}

func newChannelLimiter(c clock.Clock, every time.Duration) *channelLimiter {
	return &channelLimiter{clock: c, every: every, lims: map[string]*rate.Limiter{}, alias: map[string]string{}}
}

func (l *channelLimiter) key(ch string) string {
	if a, ok := l.alias[ch]; ok {
		return a
	}
	return ch
}

// wait takes the channel's next slot, waiting for it on the clock. If ctx
// ends first the slot is given back.
func (l *channelLimiter) wait(ctx context.Context, ch string) error {
	if l.every <= 0 {
		return ctx.Err()
	}
	l.mu.Lock()
	k := l.key(ch)
	lim := l.lims[k]
	if lim == nil {
		lim = rate.NewLimiter(rate.Every(l.every), 1)
		l.lims[k] = lim
	}
	now := l.clock.Now()
	r := lim.ReserveN(now, 1)
	l.mu.Unlock()
	if err := clock.Sleep(ctx, l.clock, r.DelayFrom(now)); err != nil {
		r.CancelAt(l.clock.Now())
		return err
	}
	return nil
}

// learn records that Slack calls channel name by id.
func (l *channelLimiter) learn(id, name string) {
	if id == "" || id == name {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.alias[id]; !ok {
		l.alias[id] = l.key(name)
	}
}
