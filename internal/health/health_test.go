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
		{72 * time.Second, true, Failing},
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
		if c == Recovered && (st.Failures != 5 || !st.Since.Equal(t0.Add(time.Second))) {
			t.Fatalf("recovered state %+v: want 5 failures since t0+1s", st)
		}
	}
	err := tr.Degraded()
	if err == nil || !strings.Contains(err.Error(), "boom") || !strings.Contains(err.Error(), "1 in a row") {
		t.Fatalf("Degraded = %v", err)
	}
}
