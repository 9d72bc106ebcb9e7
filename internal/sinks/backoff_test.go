package sinks

import (
	"testing"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/config"
)

func TestBackoff(t *testing.T) {
	r := config.Retry{Initial: time.Second, MaxInterval: 10 * time.Second, MaxAttempts: 10}
	for attempt, base := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second, 4: 8 * time.Second, 5: 10 * time.Second, 30: 10 * time.Second} {
		for range 50 {
			if d := retryWait(r, attempt, 0); d < base/2 || d > base {
				t.Fatalf("attempt %d: %s not in [%s, %s]", attempt, d, base/2, base)
			}
		}
	}
	if d := retryWait(r, 1, 42*time.Second); d != 42*time.Second {
		t.Fatalf("retry-after not honoured: %s", d)
	}
	if d := retryWait(r, 1, 48*time.Hour); d != maxRetryAfter {
		t.Fatalf("retry-after not capped: %s", d)
	}
}
