package cakeworksim

import (
	"context"
	"sort"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/cakework"
)

// Step brings the state machine up to the clock (build logs and outcomes, VM
// logs, idle VMs going quiet) and delivers pending build webhooks. Requests
// advance the state machine themselves; Step is what sends webhooks.
func (s *Sim) Step(ctx context.Context) {
	s.mu.Lock()
	s.advance(s.clk.Now())
	s.mu.Unlock()
	s.flushWebhooks(ctx)
}

// Run calls Step every interval (on the sim's clock) until ctx ends.
func (s *Sim) Run(ctx context.Context, every time.Duration) {
	if every <= 0 {
		every = 250 * time.Millisecond
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.clk.After(every):
			s.Step(ctx)
		}
	}
}

// WorkloadOptions shape the demo's synthetic traffic. Durations: 0 takes the
// default, negative turns that part off. Ratios are taken as given.
type WorkloadOptions struct {
	BuildEvery time.Duration // a new build this often; default 10s
	VMEvery    time.Duration // a new VM this often; default 8s
	FailRatio  float64       // share of builds that fail
	IdleRatio  float64       // share of VMs that go quiet and stay up
	QuietAfter time.Duration // an idle VM logs this long, then goes quiet; default 10s
	MaxVMs     int           // busy VMs beyond this are stopped, oldest first; default 5
}

// RunWorkload starts builds and VMs on the sim's clock until ctx ends, as a
// team using Cakework would: builds that pass and fail, VMs that start on
// the images they produced, log, and either finish (stopped by their owner)
// or go idle and stay up for the relay's auto-stopper to find.
func (s *Sim) RunWorkload(ctx context.Context, o WorkloadOptions) {
	if o.BuildEvery == 0 {
		o.BuildEvery = 10 * time.Second
	}
	if o.VMEvery == 0 {
		o.VMEvery = 8 * time.Second
	}
	if o.QuietAfter <= 0 {
		o.QuietAfter = 10 * time.Second
	}
	if o.MaxVMs <= 0 {
		o.MaxVMs = 5
	}
	if o.BuildEvery < 0 && o.VMEvery < 0 {
		<-ctx.Done()
		return
	}
	now := s.clk.Now()
	nextBuild, nextVM := now, now.Add(o.VMEvery/2)
	for {
		now = s.clk.Now()
		if o.BuildEvery > 0 && !now.Before(nextBuild) {
			s.workloadBuild(o)
			nextBuild = now.Add(o.BuildEvery)
		}
		if o.VMEvery > 0 && !now.Before(nextVM) {
			s.workloadVM(o)
			nextVM = now.Add(o.VMEvery)
		}
		wait := time.Duration(1<<63 - 1)
		if o.BuildEvery > 0 {
			wait = nextBuild.Sub(now)
		}
		if o.VMEvery > 0 {
			wait = min(wait, nextVM.Sub(now))
		}
		select {
		case <-ctx.Done():
			return
		case <-s.clk.After(wait):
		}
	}
}

func (s *Sim) workloadBuild(o WorkloadOptions) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance(s.clk.Now())
	s.createBuild(BuildSpec{Fail: s.rnd.Float64() < o.FailRatio})
}

func (s *Sim) workloadVM(o WorkloadOptions) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.clk.Now()
	s.advance(now)
	// Busy VMs beyond the cap finish: their owner stops them.
	var busy []*simVM
	for _, v := range s.vms {
		if v.v.State == cakework.VMStarted && !v.cached && v.quietAt.IsZero() {
			busy = append(busy, v)
		}
	}
	for len(busy) >= o.MaxVMs {
		oldest := 0
		for i, v := range busy {
			if vmLess(v.v.CreatedAt.UnixNano(), v.v.ID, busy[oldest].v.CreatedAt.UnixNano(), busy[oldest].v.ID) {
				oldest = i
			}
		}
		s.setState(busy[oldest], cakework.VMDestroyed)
		busy = append(busy[:oldest], busy[oldest+1:]...)
	}
	var images []string
	for _, b := range s.builds {
		if b.b.Status == cakework.BuildSucceeded {
			images = append(images, b.b.ImageID)
		}
	}
	sort.Strings(images) // map order must not decide what the seed picks
	var image string
	if len(images) > 0 {
		image = images[s.rnd.IntN(len(images))]
	} else {
		image = s.ulid()
	}
	port := 8080
	v := s.newVM(vmRequest{ImageID: image, CPU: 1, Memory: 256, Port: &port}, cakework.VMStarted, false)
	if s.rnd.Float64() < o.IdleRatio {
		s.vms[v.ID].quietAt = now.Add(o.QuietAfter)
	}
}
