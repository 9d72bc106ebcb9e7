package autostop

import (
	"sort"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/poller"
)

// Plan states, from the most to the least urgent.
const (
	// PlanWaitingForPoll: the stop is due, but waits for a sweep (and a
	// log poll) newer than the warning.
	PlanWaitingForPoll = "waiting-for-poll"
	// PlanWarned: vm.idle was emitted; the stop comes at StopAt.
	PlanWarned = "warned"
	// PlanCounting: the idle clock runs; the warning comes at WarnAt.
	PlanCounting = "counting"
	// PlanUnseen: the relay cannot see the VM now (no sweep or log poll
	// read to the end yet, or they fail): no clock runs.
	PlanUnseen = "unseen"
	// PlanExcluded: its image is in exclude_images (or unknown while
	// exclude_images is set): never stopped.
	PlanExcluded = "excluded"
	// PlanStopped: stopped in this start already.
	PlanStopped = "stopped"
	// PlanOff: auto-stop is off; nothing is planned.
	PlanOff = "off"
)

// VMPlan is what auto-stop plans for one started VM, from the same rules
// the stopper follows (plan): GET /v1/status and the status page show it.
type VMPlan struct {
	ID      string `json:"id"`
	ImageID string `json:"imageId,omitempty"`
	// StartedAt is when the VM entered its started state, as far as the
	// relay can tell.
	StartedAt time.Time `json:"startedAt,omitzero"`
	// IdleSince is where the idle clock counts from; zero while it does
	// not run (unseen, excluded, stopped).
	IdleSince time.Time `json:"idleSince,omitzero"`
	// WarnAt is when vm.idle is due (or was sent), StopAt when the stop is
	// due: planned now, moved later by any activity.
	WarnAt time.Time `json:"warnAt,omitzero"`
	StopAt time.Time `json:"stopAt,omitzero"`
	State  string    `json:"state"`
}

// Status is the "autostop" section of GET /v1/status.
type Status struct {
	Enabled    bool     `json:"enabled"`
	DryRun     bool     `json:"dryRun"`
	IdleAfter  string   `json:"idleAfter"`
	WarnBefore string   `json:"warnBefore"`
	VMs        []VMPlan `json:"vms"`
	Error      string   `json:"error,omitempty"`
}

// Status plans every started VM now, without acting: it reads the
// poller's view and the records as Check does and takes no lock a check
// holds, so a slow stop call does not hold it up.
func (a *AutoStop) Status() Status {
	st := Status{Enabled: true, DryRun: a.o.Config.DryRun, IdleAfter: a.o.Config.IdleAfter.String(),
		WarnBefore: a.o.Config.WarnBefore.String(), VMs: []VMPlan{}}
	vms, err := a.o.Source.VMsInState(poller.Started)
	if err != nil {
		st.Error = "cannot read the poller's VMs: " + err.Error()
		return st
	}
	sort.Slice(vms, func(i, j int) bool { return vms[i].ID < vms[j].ID })
	recs := make(map[string]record, len(vms))
	if err := a.o.Store.View(func(tx Tx) error {
		for _, vm := range vms {
			var r record
			if _, err := tx.GetSink(SinkName, "vm/"+vm.ID, &r); err != nil {
				return err
			}
			recs[vm.ID] = r
		}
		return nil
	}); err != nil {
		st.Error = "cannot read auto-stop's records: " + err.Error()
		return st
	}
	now := a.o.Clock.Now()
	for _, vm := range vms {
		r := recs[vm.ID]
		p := a.plan(vm, r, now)
		vp := VMPlan{ID: vm.ID, ImageID: vm.ImageID, StartedAt: vm.StateSince}
		switch {
		case !r.StoppedStart.IsZero() && r.StoppedStart.Equal(vm.StateSince):
			vp.State = PlanStopped
		case a.excluded(vm.ImageID):
			vp.State = PlanExcluded
		case p.unseen || p.idleSince.IsZero():
			vp.State = PlanUnseen
		default:
			vp.IdleSince = p.idleSince
			vp.WarnAt = p.idleSince.Add(a.o.Config.IdleAfter - a.o.Config.WarnBefore)
			vp.StopAt = p.stopAt
			switch {
			case p.waitPoll || p.stop:
				vp.State = PlanWaitingForPoll
			case r.WarnedFor.Equal(p.idleSince) && !p.warn:
				vp.State = PlanWarned
				vp.WarnAt = r.WarnedAt
			default:
				vp.State = PlanCounting
			}
			if vp.StopAt.IsZero() {
				// Not warned yet: warned at WarnAt, stopped warn_before
				// later, which is idle_after after IdleSince.
				vp.StopAt = p.idleSince.Add(a.o.Config.IdleAfter)
			}
		}
		st.VMs = append(st.VMs, vp)
	}
	return st
}

// OffStatus is the "autostop" section when auto-stop is off: the started
// VMs src knows (none when src is nil: the poller is off), with no plan.
func OffStatus(src Source) Status {
	st := Status{VMs: []VMPlan{}}
	if src == nil {
		return st
	}
	vms, err := src.VMsInState(poller.Started)
	if err != nil {
		st.Error = "cannot read the poller's VMs: " + err.Error()
		return st
	}
	sort.Slice(vms, func(i, j int) bool { return vms[i].ID < vms[j].ID })
	for _, vm := range vms {
		st.VMs = append(st.VMs, VMPlan{ID: vm.ID, ImageID: vm.ImageID, StartedAt: vm.StateSince, State: PlanOff})
	}
	return st
}
