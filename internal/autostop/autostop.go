package autostop

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cakework-relay/cakework-relay/internal/backoff"
	"github.com/cakework-relay/cakework-relay/internal/cakework"
	"github.com/cakework-relay/cakework-relay/internal/clock"
	"github.com/cakework-relay/cakework-relay/internal/confcheck"
	"github.com/cakework-relay/cakework-relay/internal/event"
	"github.com/cakework-relay/cakework-relay/internal/poller"
)

// SinkName keys this package's records in the state store.
const SinkName = "autostop"

// stopsKey holds the times of the last minute's stops, for the cap.
const stopsKey = "stops"

// VM is what the poller knows of one VM: the poller's own type, so the
// relay has one view of a VM. StateSince is when it entered its current
// (started) state; WatchedSince is when the relay began to watch it (the
// baseline sweep for a VM already running then): activity before it is
// unknown, so the idle clock never starts earlier.
type VM = poller.VM

// Source is the poller, seen from here. Whoever wires it in should call
// Kick after each VM sweep and logs pass.
type Source interface {
	// VMsInState lists the VMs the latest complete sweep saw in state.
	VMsInState(state string) ([]VM, error)
}

// Stopper is the part of the Cakework client used here.
type Stopper interface {
	StopVM(ctx context.Context, id string) error
	StopCachedVM(ctx context.Context, id string) error
}

// Options configure the auto-stopper.
type Options struct {
	Config Config
	// LogsWatched is poller.logs.vms: when set, a successful log poll is
	// part of fresh knowledge.
	LogsWatched   bool
	Source        Source
	Stopper       Stopper
	Store         Store
	SubjectPrefix string
	// IDs derives event ids (zero: the legacy unkeyed scheme).
	IDs        event.IDs
	Clock      clock.Clock
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// record is kept per VM in bbolt.
type record struct {
	LastSignal time.Time `json:"lastSignal,omitzero"`
	// WarnedFor/WarnedAt: the idle period (idleSince) warned about, and when.
	WarnedFor time.Time `json:"warnedFor,omitzero"`
	WarnedAt  time.Time `json:"warnedAt,omitzero"`
	// StoppedStart is the StateSince of the start that was stopped: a VM is
	// stopped at most once per start.
	StoppedStart time.Time `json:"stoppedStart,omitzero"`
	StoppedAt    time.Time `json:"stoppedAt,omitzero"`
}

// AutoStop is the auto-stop component.
type AutoStop struct {
	o   Options
	log *slog.Logger

	mu          sync.Mutex // one evaluation at a time; guards the fields below
	stops       []time.Time
	stopsLoaded bool
	// retry holds VMs whose stop call failed: not called again before
	// their time, so a VM the API keeps refusing to stop does not use up
	// the cap at every evaluation (they come at each poll now). Only VMs
	// that are started are kept.
	retry map[string]stopRetry
	// capWarned is when the cap was last logged: once a minute, not once
	// per VM per evaluation.
	capWarned time.Time
	capHeld   int

	kick   chan struct{} // 1-buffered: a pending evaluation
	cancel context.CancelFunc
	done   chan struct{}
	// waiting, when set (tests), is told when the loop next evaluates
	// unless kicked, right before it waits.
	waiting func(at time.Time)

	warned, stopped, capped, failed prometheus.Counter
}

// New checks options: o.Config gets its defaults and must pass Validate.
func New(o Options) (*AutoStop, error) {
	o.Config = o.Config.WithDefaults()
	if err := confcheck.Check("sinks.autostop", o.Config.Validate); err != nil {
		return nil, err
	}
	if o.Source == nil || o.Stopper == nil || o.Store == nil {
		return nil, errors.New("autostop: needs the poller, the Cakework client and the state store")
	}
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	a := &AutoStop{
		o:    o,
		log:  o.Logger.With("component", "autostop", "dry_run", o.Config.DryRun),
		kick: make(chan struct{}, 1),
		warned: prometheus.NewCounter(prometheus.CounterOpts{Name: "relay_autostop_warnings_total",
			Help: "vm.idle warnings emitted."}),
		stopped: prometheus.NewCounter(prometheus.CounterOpts{Name: "relay_autostop_stops_total",
			Help: "VMs stopped (or, in dry run, that would have been)."}),
		capped: prometheus.NewCounter(prometheus.CounterOpts{Name: "relay_autostop_capped_total",
			Help: "Stops withheld by max_stops_per_minute."}),
		failed: prometheus.NewCounter(prometheus.CounterOpts{Name: "relay_autostop_stop_errors_total",
			Help: "stopVM/stopCachedVM calls that failed (retried next check)."}),
	}
	if o.Registerer != nil {
		o.Registerer.MustRegister(a.warned, a.stopped, a.capped, a.failed)
	}
	return a, nil
}

// Name is the component name.
func (a *AutoStop) Name() string { return "autostop" }

// Start runs the evaluation loop on the injected clock. It evaluates at
// once, then at the earliest deadline it found (a warning or a stop due),
// whenever it is kicked (the poller learnt something), and at least every
// Config.Check.
//
// It can be started again after Stop (a fleet member does at each term it
// leads): the last minute's stops are read again from the Store.
func (a *AutoStop) Start(ctx context.Context) error {
	a.mu.Lock()
	a.stopsLoaded = false
	a.mu.Unlock()
	ctx, a.cancel = context.WithCancel(ctx)
	a.done = make(chan struct{})
	go func() {
		defer close(a.done)
		a.run(ctx)
	}()
	a.log.Info("auto-stop on", "idle_after", a.o.Config.IdleAfter, "warn_before", a.o.Config.WarnBefore,
		"max_stops_per_minute", a.o.Config.MaxStopsPerMinute)
	return nil
}

func (a *AutoStop) run(ctx context.Context) {
	for {
		next, err := a.check(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			a.log.Warn("auto-stop check failed", "err", err)
		}
		now := a.o.Clock.Now()
		wait := a.o.Config.Check
		if !next.IsZero() {
			wait = min(wait, next.Sub(now))
		}
		due := a.o.Clock.After(wait)
		if a.waiting != nil {
			a.waiting(now.Add(wait))
		}
		select {
		case <-ctx.Done():
			return
		case <-a.kick:
		case <-due:
		}
	}
}

// Kick asks for an evaluation soon, on fresh knowledge. It never blocks:
// kicks that arrive while one is pending are one.
func (a *AutoStop) Kick() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// Stop ends the loop and waits for a running check, bounded by ctx.
func (a *AutoStop) Stop(ctx context.Context) error {
	if a.cancel == nil {
		return nil
	}
	a.cancel()
	select {
	case <-a.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Activity records an activity signal for a VM now: its idle clock restarts.
func (a *AutoStop) Activity(ctx context.Context, id string) error {
	_, err := Signals{Store: a.o.Store, Clock: a.o.Clock}.Record(ctx, id)
	return err
}

// plan is what Check decided for one VM.
type plan struct {
	vm        VM
	rec       record
	idleSince time.Time
	stopAt    time.Time
	warn      bool
	stop      bool
	// next is when this VM is due next (its warning or its stop), if that
	// is after now. Zero when only new knowledge can make it due: it is
	// not idle, it cannot be seen, or its stop waits for a fresh poll.
	next time.Time
	// unseen: the relay cannot see the VM now. waitPoll: the stop is due
	// but waits for a sweep (and log poll) newer than the warning.
	unseen, waitPoll bool
}

// Check evaluates every started VM once: warnings, then stops.
func (a *AutoStop) Check(ctx context.Context) error {
	_, err := a.check(ctx)
	return err
}

// check is Check; it also returns the earliest time a VM is due next
// (zero for none), when the loop evaluates again.
func (a *AutoStop) check(ctx context.Context) (time.Time, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.o.Clock.Now()
	vms, readOK := a.startedVMs()
	sort.Slice(vms, func(i, j int) bool { return vms[i].ID < vms[j].ID })
	recs := map[string]record{}
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
		return time.Time{}, err
	}
	var (
		errs []error
		next time.Time
	)
	sooner := func(t time.Time) {
		if t.After(now) && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	for _, vm := range vms {
		p := a.plan(vm, recs[vm.ID], now)
		if p.waitPoll {
			a.log.Info("idle VM kept: no fresh poll since the warning", "vm", vm.ID)
		}
		if p.warn {
			if err := a.emitWarning(ctx, p, now); err != nil {
				errs = append(errs, err)
				continue
			}
		}
		sooner(p.next)
		if r, ok := a.retry[vm.ID]; ok && p.stop && now.Before(r.at) {
			sooner(r.at)
			continue
		}
		if p.stop {
			capped, err := a.stopVM(ctx, p, now)
			if err != nil {
				errs = append(errs, err)
			}
			if capped && len(a.stops) > 0 {
				// Due again when the oldest stop leaves the last minute.
				sooner(a.stops[0].Add(time.Minute))
			}
		}
	}
	if readOK {
		// Not on a failed read: that would forget the backoff of VMs whose
		// stop failed.
		a.pruneRetries(vms)
	}
	return next, errors.Join(errs...)
}

// stopRetry is a VM whose stop call failed.
type stopRetry struct {
	failures int
	at       time.Time // not called again before
}

// stopRetryBackoff is the wait after a failed stop call of a VM: 15s
// doubling to 5 minutes, fixed (the next kick evaluates anyway).
var stopRetryBackoff = backoff.Backoff{Initial: 15 * time.Second, Max: 5 * time.Minute, Jitter: -1}

func (a *AutoStop) stopFailed(id string, now time.Time) time.Time {
	if a.retry == nil {
		a.retry = map[string]stopRetry{}
	}
	r := a.retry[id]
	r.failures++
	r.at = now.Add(stopRetryBackoff.Delay(r.failures))
	a.retry[id] = r
	return r.at
}

// pruneRetries forgets VMs that are no longer started.
// startedVMs is the poller's started VMs. Knowing nothing stops nothing:
// an error gives none.
func (a *AutoStop) startedVMs() ([]VM, bool) {
	vms, err := a.o.Source.VMsInState(poller.Started)
	if err != nil {
		a.log.Warn("auto-stop: cannot read the poller's VMs; nothing is warned or stopped until it can", "err", err)
		return nil, false
	}
	return vms, true
}

func (a *AutoStop) pruneRetries(started []VM) {
	if len(a.retry) == 0 {
		return
	}
	keep := make(map[string]bool, len(started))
	for _, vm := range started {
		keep[vm.ID] = true
	}
	for id := range a.retry {
		if !keep[id] {
			delete(a.retry, id)
		}
	}
}

func (a *AutoStop) excluded(image string) bool {
	if image == "" && len(a.o.Config.ExcludeImages) > 0 {
		// An unknown image might be an excluded one.
		return true
	}
	for _, x := range a.o.Config.ExcludeImages {
		if x == image {
			return true
		}
	}
	return false
}

func (a *AutoStop) cached(id string) bool {
	for _, x := range a.o.Config.CachedVMs {
		if x == id {
			return true
		}
	}
	return false
}

func latest(ts ...time.Time) time.Time {
	var m time.Time
	for _, t := range ts {
		if t.After(m) {
			m = t
		}
	}
	return m
}

// unseen reports whether the relay cannot see vm right now: no sweep (and,
// with logs watched, no log poll that read to the end) since this process
// started, or the last sweep failed, or its log polls are failing or
// backing off. Such a VM is never called idle, let alone stopped.
func (a *AutoStop) unseen(vm VM) bool {
	if vm.LastSweepOK.IsZero() || vm.SweepFailing {
		return true
	}
	return a.o.LogsWatched && (vm.LastLogOK.IsZero() || vm.LogFailing)
}

func (a *AutoStop) plan(vm VM, r record, now time.Time) plan {
	p := plan{vm: vm, rec: r}
	if vm.State != "started" || a.excluded(vm.ImageID) || vm.StateSince.IsZero() {
		return p
	}
	if !r.StoppedStart.IsZero() && r.StoppedStart.Equal(vm.StateSince) {
		return p // never twice
	}
	if a.unseen(vm) {
		p.unseen = true
		return p // the poll that sees it again kicks a check
	}
	// Since the relay can see the VM again, it must stay quiet for the
	// whole idle_after.
	failed := latest(vm.LastSweepFailed, vm.SweepRecovered)
	if a.o.LogsWatched {
		failed = latest(failed, vm.LastLogFailed, vm.LogRecovered)
	}
	// The idle period already warned about counts too: failure and
	// recovery times live in memory only, so after a restart the period
	// would otherwise seem to start earlier, and be warned again under
	// another id. It can only move the clock later (newer activity wins).
	p.idleSince = latest(vm.StateSince, vm.WatchedSince, vm.LastLogLine, r.LastSignal, failed, r.WarnedFor)
	warnAt := p.idleSince.Add(a.o.Config.IdleAfter - a.o.Config.WarnBefore)
	if now.Before(warnAt) {
		p.next = warnAt
		return p
	}
	warnedThisPeriod := r.WarnedFor.Equal(p.idleSince)
	warnedAt := r.WarnedAt
	if !warnedThisPeriod {
		p.warn = true
		warnedAt = now
	}
	p.stopAt = latest(p.idleSince.Add(a.o.Config.IdleAfter), warnedAt.Add(a.o.Config.WarnBefore))
	if now.Before(p.stopAt) || p.warn {
		p.next = p.stopAt
		return p
	}
	// Fresh knowledge: a sweep and a log poll succeeded since the warning.
	// If not yet, the polls that bring it kick a check.
	if !vm.LastSweepOK.After(warnedAt) || (a.o.LogsWatched && !vm.LastLogOK.After(warnedAt)) {
		p.waitPoll = true
		return p
	}
	p.stop = true
	return p
}

func (a *AutoStop) emitWarning(ctx context.Context, p plan, now time.Time) error {
	stopAt := latest(p.idleSince.Add(a.o.Config.IdleAfter), now.Add(a.o.Config.WarnBefore))
	ev, err := event.New(event.KindVM, p.vm.ID, "idle", a.o.IDs.AutostopID(p.vm.ID, "idle", p.idleSince), now, map[string]any{
		"vmId":       p.vm.ID,
		"imageId":    p.vm.ImageID,
		"idleSince":  p.idleSince.UTC(),
		"stopAt":     stopAt.UTC(),
		"idleAfter":  a.o.Config.IdleAfter.String(),
		"dryRun":     a.o.Config.DryRun,
		"reason":     fmt.Sprintf("no log lines or activity signals since %s", p.idleSince.UTC().Format(time.RFC3339)),
		"observedBy": "autostop",
	})
	if err != nil {
		return err
	}
	superseded := false
	err = a.o.Store.Update(ctx, func(tx Tx) error {
		r, changed, err := a.current(tx, p)
		if superseded = changed; err != nil || changed {
			return err
		}
		r.WarnedFor, r.WarnedAt = p.idleSince, now
		if err := tx.PutSink(SinkName, "vm/"+p.vm.ID, r); err != nil {
			return err
		}
		return tx.EnqueueEvent(a.o.SubjectPrefix, ev)
	})
	if err == nil && superseded {
		a.log.Info("VM not warned: an activity signal arrived during the check", "vm", p.vm.ID)
		return nil
	}
	if err == nil {
		a.warned.Inc()
		a.log.Info("VM idle: warned", "vm", p.vm.ID, "idle_since", p.idleSince, "stop_at", stopAt)
	}
	return err
}

// underCap reports whether one more stop fits in the last minute's budget.
// The recent stops are kept in bbolt, so a restart loop cannot exceed it.
func (a *AutoStop) underCap(now time.Time) bool {
	if !a.stopsLoaded {
		var saved []time.Time
		if err := a.o.Store.View(func(tx Tx) error {
			_, err := tx.GetSink(SinkName, stopsKey, &saved)
			return err
		}); err != nil {
			a.log.Warn("auto-stop: cannot read recent stops; stopping nothing until it can", "err", err)
			return false
		}
		a.stops, a.stopsLoaded = saved, true
	}
	keep := a.stops[:0]
	for _, t := range a.stops {
		if now.Sub(t) < time.Minute {
			keep = append(keep, t)
		}
	}
	a.stops = keep
	return len(a.stops) < a.o.Config.MaxStopsPerMinute
}

// stillDue re-reads the VM from the poller and its record, and reports
// whether the stop planned as p still holds, for the same idle period.
func (a *AutoStop) stillDue(p plan) bool {
	var vm VM
	found := false
	vms, _ := a.startedVMs()
	for _, v := range vms {
		if v.ID == p.vm.ID {
			vm, found = v, true
			break
		}
	}
	if !found {
		a.log.Info("idle VM kept: no longer started by the latest sweep", "vm", p.vm.ID)
		return false
	}
	var rec record
	if err := a.o.Store.View(func(tx Tx) error {
		_, err := tx.GetSink(SinkName, "vm/"+p.vm.ID, &rec)
		return err
	}); err != nil {
		a.log.Warn("idle VM kept: cannot re-read its record", "vm", p.vm.ID, "err", err)
		return false
	}
	np := a.plan(vm, rec, a.o.Clock.Now())
	if !np.stop || !np.idleSince.Equal(p.idleSince) {
		a.log.Info("idle VM kept: new activity or a failed poll since the check began", "vm", p.vm.ID)
		return false
	}
	return true
}

// stopVM stops p's VM unless something changed; capped reports that
// max_stops_per_minute held it back.
func (a *AutoStop) stopVM(ctx context.Context, p plan, now time.Time) (capped bool, err error) {
	if !a.underCap(now) {
		a.capped.Inc()
		a.capHeld++
		if now.Sub(a.capWarned) >= time.Minute {
			a.log.Warn("auto-stop cap reached: idle VMs not stopped this minute", "vm", p.vm.ID,
				"withheld_since_last_report", a.capHeld, "max_stops_per_minute", a.o.Config.MaxStopsPerMinute)
			a.capWarned, a.capHeld = now, 0
		}
		return true, nil
	}
	// The poller's view may have moved on while earlier stops of this check
	// waited (the rate limit, a 429 pause, a slow call): plan again on a
	// fresh reading of this VM right before the call that cannot be undone.
	if !a.stillDue(p) {
		return false, nil
	}
	return false, a.callStop(ctx, p, now)
}

func (a *AutoStop) callStop(ctx context.Context, p plan, now time.Time) error {
	// A signal may have arrived since Check read the records: look again.
	var changed bool
	if err := a.o.Store.View(func(tx Tx) (err error) {
		_, changed, err = a.current(tx, p)
		return err
	}); err != nil {
		return fmt.Errorf("auto-stop: re-read %s before stopping: %w", p.vm.ID, err)
	}
	if changed {
		a.log.Info("idle VM kept: an activity signal arrived during the check", "vm", p.vm.ID)
		return nil
	}
	// Count the stop durably before the call, so a crash right after it
	// still counts against the cap.
	a.stops = append(a.stops, now)
	if err := a.o.Store.Update(ctx, func(tx Tx) error {
		return tx.PutSink(SinkName, stopsKey, a.stops)
	}); err != nil {
		a.stops = a.stops[:len(a.stops)-1]
		return fmt.Errorf("auto-stop: record stop of %s before calling: %w", p.vm.ID, err)
	}
	call := "stopVM"
	if a.cached(p.vm.ID) {
		call = "stopCachedVM"
	}
	// In a fleet, a member whose lease ran out while it recorded the stop
	// (a freeze) must not call: the new leader decides.
	if f, ok := a.o.Store.(interface{ StillLeading() error }); ok {
		if err := f.StillLeading(); err != nil {
			return fmt.Errorf("auto-stop: %s of %s not called: %w", call, p.vm.ID, err)
		}
	}
	already := false
	if !a.o.Config.DryRun {
		var err error
		if call == "stopCachedVM" {
			err = a.o.Stopper.StopCachedVM(ctx, p.vm.ID)
		} else {
			err = a.o.Stopper.StopVM(ctx, p.vm.ID)
		}
		switch {
		case cakework.IsAlreadyStopped(err) || cakework.IsConflict(err):
			already = true
		case err != nil:
			a.failed.Inc()
			at := a.stopFailed(p.vm.ID, now)
			return fmt.Errorf("auto-stop %s %s: %w (tried again from %s)", call, p.vm.ID, err, at.UTC().Format(time.RFC3339))
		}
	}
	delete(a.retry, p.vm.ID)
	idle := now.Sub(p.idleSince)
	ev, err := event.New(event.KindVM, p.vm.ID, "autostopped", a.o.IDs.AutostopID(p.vm.ID, "autostopped", p.idleSince), now, map[string]any{
		"vmId":           p.vm.ID,
		"imageId":        p.vm.ImageID,
		"idleSince":      p.idleSince.UTC(),
		"idleSeconds":    int64(idle.Round(time.Second).Seconds()),
		"idleFor":        idle.Round(time.Second).String(),
		"dryRun":         a.o.Config.DryRun,
		"call":           call,
		"alreadyStopped": already,
		"reason":         fmt.Sprintf("idle for %s (idle_after %s)", idle.Round(time.Second), a.o.Config.IdleAfter),
		"observedBy":     "autostop",
	})
	if err != nil {
		return err
	}
	err = a.o.Store.Update(ctx, func(tx Tx) error {
		// The call was made: record it whatever arrived meanwhile, on the
		// current record so a signal is not overwritten.
		r, _, err := a.current(tx, p)
		if err != nil {
			return err
		}
		r.StoppedStart, r.StoppedAt = p.vm.StateSince, now
		if err := tx.PutSink(SinkName, "vm/"+p.vm.ID, r); err != nil {
			return err
		}
		return tx.EnqueueEvent(a.o.SubjectPrefix, ev)
	})
	if err != nil {
		// The VM is stopped but not recorded: the next check calls again and
		// gets 409, which counts as stopped. Never a second real stop.
		return fmt.Errorf("auto-stop: record stop of %s: %w", p.vm.ID, err)
	}
	a.stopped.Inc()
	// A real stop is worth a warning in the log; a dry run's is not.
	level := slog.LevelWarn
	if a.o.Config.DryRun {
		level = slog.LevelInfo
	}
	a.log.Log(ctx, level, "VM auto-stopped", "vm", p.vm.ID, "call", call, "idle", idle.Round(time.Second), "already_stopped", already)
	return nil
}

// current re-reads p's VM record in tx. Activity signals are written
// outside Check's lock, so one may have landed since Check read p.rec:
// writes must start from the current record (never overwrite a signal),
// and changed reports a newer signal, which restarts the idle clock.
func (a *AutoStop) current(tx Tx, p plan) (record, bool, error) {
	var r record
	if _, err := tx.GetSink(SinkName, "vm/"+p.vm.ID, &r); err != nil {
		return record{}, false, err
	}
	return r, r.LastSignal.After(p.rec.LastSignal), nil
}

// HandleActivity answers a relay.vm.activity request body.
func (a *AutoStop) HandleActivity(ctx context.Context, body []byte) []byte {
	return Signals{Store: a.o.Store, Clock: a.o.Clock}.handle(ctx, body)
}
