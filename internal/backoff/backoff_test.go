package backoff

import (
	"testing"
	"time"
)

func TestNext(t *testing.T) {
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
		{"zero value, lowest draw is half", Backoff{}, 0, []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second}},
		{"no jitter ignores the draw", Backoff{Initial: 250 * time.Millisecond, Max: 8 * time.Second, Jitter: -1}, 0,
			[]time.Duration{250 * time.Millisecond, 500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 8 * time.Second}},
		{"max below initial caps the first wait", Backoff{Initial: time.Minute, Max: time.Second, Jitter: -1}, 0,
			[]time.Duration{time.Second, time.Second}},
		{"jitter above 1 is full", Backoff{Initial: time.Second, Jitter: 7}, 0, []time.Duration{0}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.b
			b.Rand = func() float64 { return tc.rnd }
			for i, want := range tc.want {
				if got := b.Next(); got != want {
					t.Fatalf("attempt %d: got %v want %v", i+1, got, want)
				}
			}
			if b.Attempts() != len(tc.want) {
				t.Fatalf("Attempts %d, want %d", b.Attempts(), len(tc.want))
			}
			b.Reset()
			if b.Attempts() != 0 {
				t.Fatal("Reset kept attempts")
			}
		})
	}
}

// Delay is pure: a resumed count continues the schedule, and n < 1 is the
// first wait.
func TestDelayIsPure(t *testing.T) {
	b := Backoff{Initial: time.Second, Max: time.Hour, Jitter: -1}
	for n, want := range map[int]time.Duration{-3: time.Second, 0: time.Second, 1: time.Second, 4: 8 * time.Second, 13: time.Hour} {
		if got := b.Delay(n); got != want {
			t.Errorf("Delay(%d) = %v, want %v", n, got, want)
		}
	}
	if b.Attempts() != 0 {
		t.Fatal("Delay counted an attempt")
	}
}

// With the real random source every wait stays in the upper half of its
// base: the bounds the sinks and the outbox rely on.
func TestEqualJitterBounds(t *testing.T) {
	b := Backoff{Initial: time.Second, Max: 10 * time.Second}
	for n, base := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second, 4: 8 * time.Second, 5: 10 * time.Second, 30: 10 * time.Second} {
		for range 200 {
			if d := b.Delay(n); d < base/2 || d > base {
				t.Fatalf("attempt %d: %s not in [%s, %s]", n, d, base/2, base)
			}
		}
	}
}

func TestAfterHonoursServerDelay(t *testing.T) {
	b := Backoff{Initial: time.Second, Max: time.Minute, Rand: func() float64 { return 1 }}
	tests := []struct {
		n      int
		server time.Duration
		want   time.Duration
	}{
		{1, 0, time.Second},
		{1, 7 * time.Second, 7 * time.Second},  // longer than the schedule: the server wins
		{5, 3 * time.Second, 16 * time.Second}, // shorter: the schedule still grows
		{30, 48 * time.Hour, 48 * time.Hour},   // Max caps the schedule, not the server's ask
		{2, -time.Second, 2 * time.Second},     // nonsense from the server is ignored
	}
	for _, tc := range tests {
		if got := b.After(tc.n, tc.server); got != tc.want {
			t.Errorf("After(%d, %v) = %v, want %v", tc.n, tc.server, got, tc.want)
		}
	}
	c := Backoff{Initial: time.Second, Rand: func() float64 { return 1 }}
	if got := c.NextAtLeast(7 * time.Second); got != 7*time.Second || c.Attempts() != 1 {
		t.Fatalf("NextAtLeast: %v after %d attempts", got, c.Attempts())
	}
}
