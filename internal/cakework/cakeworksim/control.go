package cakeworksim

import (
	"sort"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/cakework"
)

// These methods let tests set the scene directly, without the API. None of
// them counts as a call.

// BuildSpec describes a build created with CreateBuild.
type BuildSpec struct {
	// ID defaults to a fresh UUID.
	ID string
	// Fail makes the build end failed instead of succeeded.
	Fail bool
	// Duration overrides Options.BuildDuration.
	Duration time.Duration
	// Manual keeps the build in created until SetBuildStatus moves it.
	Manual bool
}

// CreateBuild adds a build in state created, as buildImageFromFiles would.
func (s *Sim) CreateBuild(spec BuildSpec) cakework.Build {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.createBuild(spec)
}

// createBuild is CreateBuild with s.mu held.
func (s *Sim) createBuild(spec BuildSpec) cakework.Build {
	now := s.clk.Now().UTC()
	if spec.ID == "" {
		spec.ID = s.uuid()
	}
	d := spec.Duration
	if d <= 0 {
		d = s.opts.BuildDuration
	}
	b := &simBuild{
		b:        cakework.Build{BuildID: spec.ID, Status: cakework.BuildCreated, CreatedAt: now, UpdatedAt: now},
		fail:     spec.Fail,
		pinned:   spec.Manual,
		finishAt: now.Add(d),
		nextLog:  now,
	}
	s.builds[spec.ID] = b
	if !spec.Manual {
		s.active[spec.ID] = struct{}{}
	}
	return b.b
}

// SetBuildStatus sets a build's status by hand and stops the state machine
// from moving it. A succeeded build without imageID gets a fresh one. A
// final status queues the build webhook, as a real finish would. It reports
// whether the build exists.
func (s *Sim) SetBuildStatus(id, status, imageID string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.builds[id]
	if !ok {
		return false
	}
	b.pinned = true
	delete(s.active, id)
	if status == cakework.BuildSucceeded && imageID == "" {
		imageID = s.ulid()
	}
	s.finishBuild(b, status, imageID, s.clk.Now())
	return true
}

// Build returns a build as the API would.
func (s *Sim) Build(id string) (cakework.Build, bool) { return one(s, s.builds, id, buildOf) }

// Builds returns every build, oldest first.
func (s *Sim) Builds() []cakework.Build {
	return all(s, s.builds, buildOf, func(b cakework.Build) (time.Time, string) { return b.CreatedAt, b.BuildID })
}

func buildOf(b *simBuild) cakework.Build { return b.b }

// one is what m holds at id, as view shows it, once the sim has caught up
// with its clock.
func one[P, T any](s *Sim, m map[string]P, id string, view func(P) T) (T, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance(s.clk.Now())
	p, ok := m[id]
	if !ok {
		var zero T
		return zero, false
	}
	return view(p), true
}

// all is everything m holds, as view shows it, oldest first (by key:
// creation time, then id), once the sim has caught up with its clock.
func all[P, T any](s *Sim, m map[string]P, view func(P) T, key func(T) (time.Time, string)) []T {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance(s.clk.Now())
	out := make([]T, 0, len(m))
	for _, p := range m {
		out = append(out, view(p))
	}
	sort.Slice(out, func(i, j int) bool {
		ti, idi := key(out[i])
		tj, idj := key(out[j])
		return vmLess(ti.UnixNano(), idi, tj.UnixNano(), idj)
	})
	return out
}

// AddVM adds a one-shot VM. Defaults: a fresh id and hostname, cpu 1,
// memory 256, state started, times now. Unlike startVM it writes no boot
// lines, but a started VM logs every VMLogEvery like any other; call
// SetVMQuiet to keep its log exactly what the test appends.
func (s *Sim) AddVM(v cakework.VM) cakework.VM {
	return s.addVM(v, false, cakework.VMStarted)
}

// AddCachedVM adds a cached VM (default state stopped).
func (s *Sim) AddCachedVM(v cakework.VM) cakework.VM {
	return s.addVM(v, true, cakework.VMStopped)
}

func (s *Sim) addVM(v cakework.VM, cached bool, state string) cakework.VM {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.clk.Now().UTC()
	if v.ID == "" {
		v.ID = s.hex(14)
	}
	if v.Hostname == "" {
		v.Hostname = v.ID + ".fly.dev"
	}
	if v.CPU == 0 {
		v.CPU = 1
	}
	if v.Memory == 0 {
		v.Memory = 256
	}
	if v.State == "" {
		v.State = state
	}
	if v.ImageID == "" {
		v.ImageID = s.ulid()
	}
	if v.CreatedAt.IsZero() {
		v.CreatedAt = now
	}
	if v.UpdatedAt.IsZero() {
		v.UpdatedAt = v.CreatedAt
	}
	v.CreatedAt, v.UpdatedAt = v.CreatedAt.UTC(), v.UpdatedAt.UTC()
	s.putVM(v, cached, false)
	return v
}

// SetVMState moves a VM to any state, known or not (Fly's transient states
// included), updating updatedAt. It reports whether the VM exists.
func (s *Sim) SetVMState(id, state string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.vms[id]
	if ok {
		s.setState(v, state)
	}
	return ok
}

// SetVMQuiet makes a started VM stop (or resume) logging: an idle VM.
func (s *Sim) SetVMQuiet(id string, quiet bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.vms[id]
	if ok {
		s.advance(s.clk.Now())
		v.quiet = quiet
		v.quietAt = time.Time{}
		if !quiet {
			v.nextLog = s.clk.Now().Add(s.opts.VMLogEvery)
		}
	}
	return ok
}

// RemoveVM deletes a VM outright (getVM then answers 404). Its logs stay.
func (s *Sim) RemoveVM(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.vms[id]
	delete(s.vms, id)
	return ok
}

// VM returns a VM as the API would.
func (s *Sim) VM(id string) (cakework.VM, bool) { return one(s, s.vms, id, vmOf) }

// VMs returns every VM, oldest first.
func (s *Sim) VMs() []cakework.VM {
	return all(s, s.vms, vmOf, func(v cakework.VM) (time.Time, string) { return v.CreatedAt, v.ID })
}

func vmOf(v *simVM) cakework.VM { return v.v }

// AppendVMLogs adds lines to a VM's log (also served as its cached-VM log).
// A zero Timestamp means now.
func (s *Sim) AppendVMLogs(id string, lines ...cakework.LogLine) {
	s.appendLines(logKey{cakework.LogVM, id}, lines)
}

// AppendBuildLogs adds lines to a build's log.
func (s *Sim) AppendBuildLogs(id string, lines ...cakework.LogLine) {
	s.appendLines(logKey{cakework.LogBuild, id}, lines)
}

// AppendFunctionBuildLogs adds lines to a function build's log. There is no
// API to create function builds; the first append makes its log exist.
func (s *Sim) AppendFunctionBuildLogs(id string, lines ...cakework.LogLine) {
	s.appendLines(logKey{cakework.LogFunctionBuild, id}, lines)
}

func (s *Sim) appendLines(k logKey, lines []cakework.LogLine) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.clk.Now()
	if s.logs[k] == nil {
		s.logs[k] = &stream{}
	}
	for _, l := range lines {
		at := now
		if l.Timestamp != 0 {
			at = l.Time()
		}
		level := l.Level
		if level == "" {
			level = "info"
		}
		s.appendLog(k, at, level, l.Message)
	}
}

// LogCount is the number of lines in a stream (cached VM logs are the VM's).
func (s *Sim) LogCount(kind cakework.LogKind, id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance(s.clk.Now())
	if kind == cakework.LogCachedVM {
		kind = cakework.LogVM
	}
	if st := s.logs[logKey{kind, id}]; st != nil {
		return len(st.lines)
	}
	return 0
}
