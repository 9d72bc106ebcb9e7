package autostop

import (
	"testing"
	"time"
)

// Status shows what the stopper plans, from the same rules: the idle
// clock, the warning and the stop, and why a VM has none.
func TestStatusShowsThePlan(t *testing.T) {
	cfg := defaults()
	cfg.ExcludeImages = []string{"keep"}
	e := newEnv(t, cfg)
	e.startVM("idle", "img")
	e.startVM("kept", "keep")
	e.startVM("blind", "img")
	e.src.logFails["blind"] = true
	plans := func() map[string]VMPlan {
		t.Helper()
		st := e.as.Status()
		if !st.Enabled || st.IdleAfter != "30m0s" || st.WarnBefore != "5m0s" || st.Error != "" {
			t.Fatalf("status %+v", st)
		}
		out := map[string]VMPlan{}
		for _, p := range st.VMs {
			out[p.ID] = p
		}
		return out
	}
	p := plans()
	if got := p["idle"]; got.State != PlanCounting || !got.IdleSince.Equal(t0) || !got.WarnAt.Equal(t0.Add(25*time.Minute)) || !got.StopAt.Equal(t0.Add(30*time.Minute)) {
		t.Errorf("idle VM: %+v", got)
	}
	if got := p["kept"]; got.State != PlanExcluded || !got.StopAt.IsZero() {
		t.Errorf("excluded VM: %+v", got)
	}
	if got := p["blind"]; got.State != PlanUnseen || !got.StopAt.IsZero() {
		t.Errorf("VM whose logs fail: %+v", got)
	}
	e.run(26*time.Minute, nil)
	if got := plans()["idle"]; got.State != PlanWarned || !got.WarnAt.Equal(t0.Add(25*time.Minute)) || !got.StopAt.Equal(t0.Add(30*time.Minute)) {
		t.Errorf("warned VM: %+v", got)
	}
	e.run(5*time.Minute, nil)
	if got := plans()["idle"]; got.State != PlanStopped {
		t.Errorf("stopped VM: %+v", got)
	}
	off := OffStatus(e.src)
	if off.Enabled || len(off.VMs) != 3 || off.VMs[0].State != PlanOff {
		t.Errorf("off: %+v", off)
	}
	if len(OffStatus(nil).VMs) != 0 {
		t.Error("no poller, yet VMs")
	}
}
