package state

import (
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/health"
	"github.com/cakework-relay/cakework-relay/internal/logtest"
)

// Failing checkpoints back off (100 ms doubling to 10 s) and are logged
// when they start, at most every health.DefaultRepeat while they last, and
// when they recover: not every 100 ms.
func TestFailingCheckpointsBackOffAndLogWithLimits(t *testing.T) {
	log, rec := logtest.New()
	r := newCkptRetry(100 * time.Millisecond)
	now := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	full := errors.New("write relay.db: no space left on device")
	tries := 0
	// Ten minutes of 100 ms ticks against a full disk.
	for end := now.Add(10 * time.Minute); now.Before(end); now = now.Add(100 * time.Millisecond) {
		if !r.due(now) {
			continue
		}
		tries++
		r.done(now, full, log)
	}
	// 0.1+0.2+...+6.4 s, then every 10 s: about 70 tries, not 6,000.
	if tries < 60 || tries > 80 {
		t.Fatalf("%d checkpoint tries in 10 minutes", tries)
	}
	if n := len(rec.Find(slog.LevelWarn, "journal checkpoint failed; retrying with backoff")); n != 1 {
		t.Fatalf("%d 'failed' lines, want 1:\n%s", n, rec)
	}
	// One reminder per health.DefaultRepeat (5 min) in 10 minutes.
	if n, most := len(rec.Find(slog.LevelWarn, "journal checkpoint still failing")), int(10*time.Minute/health.DefaultRepeat); n < 1 || n > most {
		t.Fatalf("%d reminders in 10 minutes:\n%s", n, rec)
	}
	for !r.due(now) {
		now = now.Add(100 * time.Millisecond)
	}
	r.done(now, nil, log)
	if n := len(rec.Find(slog.LevelWarn, "journal checkpoint recovered")); n != 1 {
		t.Fatalf("%d 'recovered' lines:\n%s", n, rec)
	}
	if !r.due(now) {
		t.Fatal("not due right after a success")
	}
}
