package poller

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/cakework"
	"github.com/cakework-relay/cakework-relay/internal/event"
	"github.com/cakework-relay/cakework-relay/internal/state"
)

// metaBaseline is the meta key of the VM baseline: present once the first
// complete sweep on fresh state was recorded.
const metaBaseline = "poller.vms.baseline"

type baselineMeta struct {
	At time.Time `json:"at"`
}

// vmRecord is what the poller keeps per VM (state bucket "resources",
// kind vm).
type vmRecord struct {
	// VM is the VM as last observed, normalized.
	VM        cakework.VM `json:"vm"`
	FirstSeen time.Time   `json:"firstSeen"`
	// RunningAtBaseline: the VM was started when the baseline was taken,
	// so its log is tailed from the baseline, not from its first line.
	RunningAtBaseline bool `json:"runningAtBaseline,omitempty"`
	// GoneAt: the VM left the list and is confirmed destroyed; the record
	// is a tombstone until tombstoneTTL.
	GoneAt time.Time `json:"goneAt,omitzero"`
	// LogsDoneTs is the newest log line emitted before tailing stopped
	// (unix ms). A cached VM that starts again resumes after it.
	LogsDoneTs int64 `json:"logsDoneTs,omitempty"`
}

// vmData is a VM event's data: the VM as the API returned it, normalized,
// plus what the relay knows about the change.
type vmData struct {
	cakework.VM
	PreviousState string `json:"previousState,omitempty"`
	ObservedBy    string `json:"observedBy"`
}

// vmChange is one record write, with or without an event.
type vmChange struct {
	vm   cakework.VM
	prev string // previous state; "" for a VM first seen
	emit bool
	at   time.Time
	gone bool // confirmed destroyed and absent from the list
	del  bool // drop the tombstone
	base bool // baseline record
}

// sweepVMs lists every VM and records changes. A failed or incomplete list
// changes nothing.
func (p *Poller) sweepVMs(ctx context.Context) error {
	now := p.clk.Now().UTC()
	vms, err := p.client.ListAllVMs(ctx, cakework.ListVMsQuery{}, p.o.MaxListPages)
	if err != nil {
		p.noteAuth(err)
		p.know.sweep(false, now)
		return fmt.Errorf("vm sweep: %w", err)
	}
	p.authOK()

	listed := make(map[string]cakework.VM, len(vms))
	for _, v := range vms {
		if !event.ValidToken(v.ID) {
			p.warnOnce("vmid/"+v.ID, "skipping a VM whose id cannot be a NATS subject token", "id", clip(v.ID))
			continue
		}
		if !event.ValidToken(v.State) {
			p.warnOnce("vmstate/"+v.ID+"/"+v.State, "skipping a VM whose state cannot be a NATS subject token", "id", v.ID, "state", clip(v.State))
			continue
		}
		listed[v.ID] = v
	}

	var (
		base  baselineMeta
		haveB bool
		recs  = map[string]vmRecord{}
	)
	if err := p.store.View(func(tx Tx) error {
		var err error
		if haveB, err = tx.GetMeta(metaBaseline, &base); err != nil {
			return err
		}
		return tx.ForEachResource(state.KindVM, func(id string, raw []byte) error {
			var r vmRecord
			if err := json.Unmarshal(raw, &r); err != nil {
				p.warnOnce("vmrec/"+id, "unreadable VM record replaced", "id", id, "err", err)
				return nil
			}
			recs[id] = r
			return nil
		})
	}); err != nil {
		return fmt.Errorf("vm sweep: read state: %w", err)
	}

	if !haveB {
		return p.baseline(ctx, listed, now)
	}

	var changes []vmChange
	var vanished []vmRecord
	for id, v := range listed {
		r, ok := recs[id]
		switch {
		case !ok:
			changes = append(changes, vmChange{vm: v, emit: true, at: eventTime(v, now)})
		case r.VM.State != v.State:
			changes = append(changes, vmChange{vm: v, prev: r.VM.State, emit: true, at: eventTime(v, now)})
		case !r.VM.UpdatedAt.Equal(v.UpdatedAt) || !r.GoneAt.IsZero():
			changes = append(changes, vmChange{vm: v, prev: r.VM.State})
		}
	}
	for id, r := range recs {
		if _, ok := listed[id]; ok {
			continue
		}
		switch {
		case r.VM.State != cakework.VMDestroyed:
			vanished = append(vanished, r)
		case r.GoneAt.IsZero():
			changes = append(changes, vmChange{vm: r.VM, prev: r.VM.State, gone: true})
		case now.Sub(r.GoneAt) > tombstoneTTL:
			changes = append(changes, vmChange{vm: r.VM, del: true})
		}
	}
	confirmed, cerr := p.confirmVanished(ctx, vanished, now)
	changes = append(changes, confirmed...)
	if err := p.applyVMChanges(ctx, changes, base, now); err != nil {
		return fmt.Errorf("vm sweep: %w", err)
	}
	p.know.sweep(true, now)
	if cerr != nil {
		return fmt.Errorf("vm sweep: confirming vanished VMs: %w", cerr)
	}
	return nil
}

// confirmVanished asks getVM about each VM missing from a complete list.
// 404 or destroyed confirm it; another state is taken as the observation;
// an error leaves the VM as it was until the next sweep.
func (p *Poller) confirmVanished(ctx context.Context, gone []vmRecord, now time.Time) ([]vmChange, error) {
	sort.Slice(gone, func(i, j int) bool { return gone[i].VM.ID < gone[j].VM.ID })
	var (
		mu  sync.Mutex
		out []vmChange
	)
	err := parallel(ctx, p.workers, gone, func(ctx context.Context, r vmRecord) error {
		key := "getVM/" + r.VM.ID
		if !p.due(key) || p.paused() {
			return nil
		}
		v, err := p.client.GetVM(ctx, r.VM.ID)
		var c vmChange
		switch {
		case cakework.IsNotFound(err):
			p.succeeded(key)
			gv := r.VM
			gv.State = cakework.VMDestroyed
			c = vmChange{vm: gv, prev: r.VM.State, emit: true, at: now, gone: true}
		case err != nil:
			p.failed(key, err)
			return fmt.Errorf("getVM %s: %w", r.VM.ID, err)
		default:
			p.succeeded(key)
			if v.ID != r.VM.ID || !event.ValidToken(v.State) {
				p.warnOnce("getvm/"+r.VM.ID, "getVM answered an unusable VM; ignored", "id", r.VM.ID)
				return nil
			}
			switch {
			case v.State != r.VM.State:
				c = vmChange{vm: v, prev: r.VM.State, emit: true, at: eventTime(v, now), gone: v.State == cakework.VMDestroyed}
			case !v.UpdatedAt.Equal(r.VM.UpdatedAt):
				c = vmChange{vm: v, prev: r.VM.State}
			default:
				return nil
			}
		}
		mu.Lock()
		out = append(out, c)
		mu.Unlock()
		return nil
	})
	return out, err
}

// baseline records the first complete sweep: silent unless emit_baseline.
func (p *Poller) baseline(ctx context.Context, listed map[string]cakework.VM, now time.Time) error {
	changes := make([]vmChange, 0, len(listed))
	for _, v := range listed {
		changes = append(changes, vmChange{vm: v, emit: p.cfg.VMs.EmitBaseline, at: eventTime(v, now), base: true})
	}
	if err := p.applyVMChanges(ctx, changes, baselineMeta{At: now}, now); err != nil {
		return fmt.Errorf("vm baseline: %w", err)
	}
	// The marker goes last: a baseline cut short is simply taken again.
	if err := p.store.Update(ctx, func(tx Tx) error {
		return tx.PutMeta(metaBaseline, baselineMeta{At: now})
	}); err != nil {
		return fmt.Errorf("vm baseline: %w", err)
	}
	p.know.sweep(true, now)
	p.log.Info("VM baseline recorded", "vms", len(listed), "emitted", p.cfg.VMs.EmitBaseline)
	return nil
}

// shouldTail reports whether a change shows a VM whose log must be read:
// at the baseline only started VMs (from the baseline on); later a VM seen
// started, a VM that went from new or created to a later state between two
// sweeps (it ran in between), or one whose updatedAt moved without a state
// change (a cached VM that started and stopped in between). Tailing ends
// once the VM is no longer started and its log is drained.
func shouldTail(c vmChange) bool {
	switch {
	case c.del || c.gone:
		return false
	case c.base:
		return c.vm.State == cakework.VMStarted
	case c.vm.State == cakework.VMStarted:
		return true
	case c.vm.State == cakework.VMCreated:
		return false
	}
	return c.prev == "" || c.prev == cakework.VMCreated || !c.emit
}

func eventTime(v cakework.VM, now time.Time) time.Time {
	if !v.UpdatedAt.IsZero() {
		return v.UpdatedAt
	}
	return now
}

// vmChunk bounds one transaction of a sweep. Each VM's record and event
// commit together whatever the chunking.
const vmChunk = 500

func (p *Poller) applyVMChanges(ctx context.Context, changes []vmChange, base baselineMeta, now time.Time) error {
	sort.Slice(changes, func(i, j int) bool { return changes[i].vm.ID < changes[j].vm.ID })
	for start := 0; start < len(changes); start += vmChunk {
		chunk := changes[start:min(start+vmChunk, len(changes))]
		// Events are built outside the transaction: it runs in the store's
		// shared commit loop.
		type prepared struct {
			subject, id string
			payload     []byte
		}
		evs := make([]*prepared, len(chunk))
		for i, c := range chunk {
			if !c.emit {
				continue
			}
			id := p.o.IDs.VMStateID(c.vm.ID, c.vm.State, c.vm.UpdatedAt)
			ev, err := event.New(event.KindVM, c.vm.ID, c.vm.State, id, c.at,
				vmData{VM: c.vm, PreviousState: c.prev, ObservedBy: ObservedBy})
			if err != nil {
				p.warnOnce("vmev/"+c.vm.ID, "VM event not built", "id", c.vm.ID, "err", err)
				continue
			}
			payload, err := json.Marshal(ev)
			if err != nil {
				return err
			}
			evs[i] = &prepared{ev.NATSSubject(p.prefix), id, payload}
		}
		err := p.store.Update(ctx, func(tx Tx) error {
			for i, c := range chunk {
				var r vmRecord
				had, err := tx.GetResource(state.KindVM, c.vm.ID, &r)
				if err != nil {
					r, had = vmRecord{}, false
				}
				if c.del {
					if err := tx.DeleteResource(state.KindVM, c.vm.ID); err != nil {
						return err
					}
					continue
				}
				if !had {
					r.FirstSeen = now
				}
				if c.base {
					r.RunningAtBaseline = c.vm.State == cakework.VMStarted
				} else if r.VM.State != c.vm.State {
					r.RunningAtBaseline = false
				}
				r.VM = c.vm
				r.GoneAt = time.Time{}
				if c.gone {
					r.GoneAt = now
				}
				if err := tx.PutResource(state.KindVM, c.vm.ID, r); err != nil {
					return err
				}
				if p.cfg.Logs.VMs && shouldTail(c) {
					// The cursor is born with the observation that the VM
					// ran, so a VM that starts and stops between two logs
					// ticks still has its lines read.
					var cur cursor
					have, err := tx.GetCursor(state.KindVM, c.vm.ID, &cur)
					if err != nil || !have {
						if err := tx.PutCursor(state.KindVM, c.vm.ID, vmFreshCursor(r, base, true)); err != nil {
							return err
						}
					}
				}
				if e := evs[i]; e != nil {
					if err := tx.Enqueue(e.subject, e.id, e.payload); err != nil {
						return err
					}
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		for i, c := range chunk {
			switch {
			case c.del:
				p.know.forget(c.vm.ID)
				continue
			case c.gone:
				p.know.setState(c.vm.ID, cakework.VMDestroyed)
			default:
				p.know.setState(c.vm.ID, c.vm.State)
			}
			if evs[i] != nil {
				p.m.events.WithLabelValues(event.KindVM).Inc()
			}
		}
	}
	return nil
}

func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}
