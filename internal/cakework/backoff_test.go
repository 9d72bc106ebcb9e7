package cakework

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/clock"
)

func TestBackoffNext(t *testing.T) {
	tests := []struct {
		name string
		b    Backoff
		rnd  float64
		want []time.Duration
	}{
		{"no jitter draw", Backoff{Initial: time.Second, Max: 10 * time.Second, Jitter: 1}, 1,
			[]time.Duration{1 * time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 10 * time.Second, 10 * time.Second}},
		{"full jitter at zero", Backoff{Initial: time.Second, Max: 10 * time.Second, Jitter: 1}, 0,
			[]time.Duration{0, 0, 0}},
		{"half jitter, mid draw", Backoff{Initial: 100 * time.Millisecond, Max: time.Second, Jitter: 0.5, Multiplier: 3}, 0.5,
			[]time.Duration{75 * time.Millisecond, 225 * time.Millisecond, 675 * time.Millisecond, 750 * time.Millisecond}},
		{"zero value", Backoff{}, 1, []time.Duration{time.Second, 2 * time.Second, 4 * time.Second}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.b
			b.Rand = func() float64 { return tc.rnd }
			for i, want := range tc.want {
				if got := b.Next(); got != want {
					t.Fatalf("attempt %d: got %v want %v", i, got, want)
				}
			}
			b.Reset()
			if b.Attempts() != 0 {
				t.Fatal("Reset kept attempts")
			}
		})
	}
}

func TestBackoffNextForHonoursRetryAfter(t *testing.T) {
	b := Backoff{Initial: time.Second, Rand: func() float64 { return 1 }}
	if got := b.NextFor(&APIError{Status: 429, RetryAfter: 7 * time.Second}); got != 7*time.Second {
		t.Fatalf("got %v want 7s", got)
	}
}

func TestRetryIsBounded(t *testing.T) {
	clk := clock.NewFake(time.Unix(0, 0))
	b := &Backoff{Initial: time.Second, Jitter: 1, Rand: func() float64 { return 1 }}
	calls := 0
	done := make(chan error, 1)
	go func() {
		done <- Retry(context.Background(), clk, b, 3, func(context.Context) error {
			calls++
			return &APIError{Status: 503}
		})
	}()
	// Two sleeps: 1s then 2s.
	for _, d := range []time.Duration{time.Second, 2 * time.Second} {
		waitForWaiter(t, clk)
		clk.Advance(d)
	}
	err := <-done
	if calls != 3 || !IsRetryable(err) {
		t.Fatalf("calls=%d err=%v, want 3 calls ending in the 503", calls, err)
	}

	calls = 0
	err = Retry(context.Background(), clk, &Backoff{}, 5, func(context.Context) error {
		calls++
		return &APIError{Status: 400}
	})
	if calls != 1 || err == nil {
		t.Fatalf("a 400 must not be retried: calls=%d err=%v", calls, err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err = Retry(ctx, clk, &Backoff{}, 5, func(context.Context) error { return &APIError{Status: 500} })
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled retry: %v", err)
	}
}

func waitForWaiter(t *testing.T, clk *clock.Fake) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for clk.Waiters() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("nothing waited on the clock")
		}
		time.Sleep(time.Millisecond)
	}
}
