package health

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestTransitionsAreReportedOnce(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var tr Tracker
	tr.Repeat = time.Minute
	if c, _ := tr.OK(t0); c != Quiet {
		t.Fatalf("OK while healthy: %v", c)
	}
	if tr.Degraded() != nil {
		t.Fatal("healthy tracker degraded")
	}
	steps := []struct {
		at   time.Duration
		fail bool
		want Change
	}{
		{1 * time.Second, true, Failing},
		{2 * time.Second, true, Quiet},
		{30 * time.Second, true, Quiet},
		{61 * time.Second, true, StillFailing},
		{62 * time.Second, true, Quiet},
		{70 * time.Second, false, Recovered},
		{71 * time.Second, false, Quiet},
		// A new outage right after a recovery is told at once.
		{72 * time.Second, true, Failing},
		{73 * time.Second, false, Recovered},
		{74 * time.Second, true, Failing},
		{75 * time.Second, false, Recovered},
		// A third spell within a minute of the last two is only counted.
		{76 * time.Second, true, Quiet},
		{77 * time.Second, false, Quiet},
		{200 * time.Second, true, Failing},
	}
	for i, s := range steps {
		var c Change
		var st State
		if s.fail {
			c, st = tr.Fail(t0.Add(s.at), errors.New("boom"))
		} else {
			c, st = tr.OK(t0.Add(s.at))
		}
		if c != s.want {
			t.Fatalf("step %d (%v): change %v, want %v", i, s.at, c, s.want)
		}
		if c == Recovered && s.at == 70*time.Second && (st.Failures != 5 || !st.Since.Equal(t0.Add(time.Second))) {
			t.Fatalf("recovered state %+v: want 5 failures since t0+1s", st)
		}
	}
	err := tr.Degraded()
	if err == nil || !strings.Contains(err.Error(), "1 in a row") {
		t.Fatalf("Degraded = %v", err)
	}
	if strings.Contains(err.Error(), "boom") {
		t.Fatalf("Degraded quotes the error (it is shown unauthenticated): %v", err)
	}
}

// A condition that fails and recovers at every turn is logged once per
// Repeat, not at every turn, and the reminder counts the flaps.
func TestFlappingIsRateLimited(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tr := Tracker{Repeat: time.Minute}
	changes := map[Change]int{}
	var reminded State
	for i := range 600 { // 10 minutes, a turn a second
		now := t0.Add(time.Duration(i) * time.Second)
		var c Change
		var st State
		if i%2 == 0 {
			c, st = tr.Fail(now, errors.New("boom"))
		} else {
			c, st = tr.OK(now)
		}
		changes[c]++
		if c == Failing && st.Flaps > 0 {
			reminded = st
		}
	}
	if n := changes[Failing] + changes[Recovered] + changes[StillFailing]; n > 4*10+2 {
		t.Fatalf("%d reports in 10 minutes of flapping at Repeat 1m: %v", n, changes)
	}
	if changes[Failing] < 5 || reminded.Flaps == 0 {
		t.Fatalf("flapping was not reported with its count: %v, last %+v", changes, reminded)
	}
}
