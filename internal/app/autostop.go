package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cakework-relay/cakework-relay/internal/autostop"
	"github.com/cakework-relay/cakework-relay/internal/clock"
	"github.com/cakework-relay/cakework-relay/internal/poller"
)

// newAutostop records activity signals (admin API and NATS) always, and
// runs the auto-stopper when sinks.autostop.enabled, on this process's
// poller's knowledge (p; nil when the poller is off). It adds the
// "autostop" status section: each started VM's idle clock and stop time.
func newAutostop(d *Core, p *poller.Poller) (*autostopRunner, error) {
	sig := autostop.Signals{Store: autostop.StateStore(d.Store), Clock: d.Clock, Known: knownVM(p)}
	store := sig.Store
	if d.Fleet != nil {
		// Signals go to the leader, which keeps the idle clocks in the
		// fleet's knowledge; it answers relay.vm.activity itself.
		store = d.Fleet.store.Autostop()
		autostop.Signals{Remote: d.Fleet.remote.Activity}.Mount(d.HTTP.Admin())
		d.Fleet.signals.Known = sig.Known
		sig = d.Fleet.signals
	} else {
		sig.Mount(d.HTTP.Admin())
	}
	c := &autostopRunner{sig: sig, nc: d.Bus.Conn(), p: p, clk: d.Clock, log: d.Logger}
	cfg := d.Config.Sinks.Autostop
	if !cfg.Enabled {
		var src autostop.Source
		if p != nil {
			src = p
		}
		d.HTTP.AddStatus("autostop", func() any { return autostop.OffStatus(src) })
		return c, nil
	}
	if p == nil {
		return nil, errors.New("sinks.autostop.enabled needs the poller, which is off: set cakework.api_key or CAKEWORK_API_KEY")
	}
	as, err := autostop.New(autostop.Options{
		Config:        cfg,
		LogsWatched:   d.Config.Poller.Logs.VMs,
		Source:        p,
		Stopper:       p.Client(),
		Store:         store,
		SubjectPrefix: d.Config.Bus.SubjectPrefix,
		IDs:           d.IDs,
		Clock:         d.Clock,
		Logger:        d.Logger,
		Registerer:    d.Registry,
	})
	if err != nil {
		return nil, err
	}
	// Idle clocks are evaluated on fresh knowledge, right after each poll.
	p.OnVMKnowledge(as.Kick)
	d.HTTP.AddStatus("autostop", func() any { return as.Status() })
	c.as = as
	return c, nil
}

// knownVM is the activity signals' Known: a signal counts only for a VM
// the poller has seen.
func knownVM(p *poller.Poller) func(id string) error {
	if p == nil {
		return func(string) error {
			return errors.New("the poller is off (set cakework.api_key or CAKEWORK_API_KEY): activity counts only for VMs the poller knows")
		}
	}
	return func(id string) error {
		if !p.VMKnowledge(id).Known {
			return fmt.Errorf("vm %s is not known to the poller (no VM sweep has seen it); check the id: activity counts only for VMs the relay follows", id)
		}
		return nil
	}
}

// Activity records of VMs the poller no longer knows are pruned this often,
// once they are this old.
const (
	signalPruneEvery = time.Hour
	signalRecordTTL  = 24 * time.Hour
)

type autostopRunner struct {
	sig autostop.Signals
	nc  *nats.Conn
	sub *nats.Subscription
	as  *autostop.AutoStop

	p      *poller.Poller
	clk    clock.Clock
	log    *slog.Logger
	cancel context.CancelFunc
	done   chan struct{}
}

// prune deletes, every signalPruneEvery, the activity records of VMs the
// poller no longer knows.
func (c *autostopRunner) prune(ctx context.Context) {
	defer close(c.done)
	keep := func(id string) bool { return c.p != nil && c.p.VMKnowledge(id).Known }
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.clk.After(signalPruneEvery):
		}
		n, err := c.sig.Prune(ctx, keep, signalRecordTTL)
		if err != nil && ctx.Err() == nil {
			c.log.Warn("pruning activity records failed; retrying in an hour", "err", err)
		} else if n > 0 {
			c.log.Debug("pruned activity records of VMs the poller no longer knows", "n", n)
		}
	}
}

func (c *autostopRunner) Name() string { return "autostop" }

func (c *autostopRunner) Start(ctx context.Context) error {
	sub, err := c.sig.Subscribe(c.nc)
	if err != nil {
		return err
	}
	c.sub = sub
	pctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	c.cancel, c.done = cancel, make(chan struct{})
	go c.prune(pctx)
	if c.as != nil {
		if err := c.as.Start(ctx); err != nil {
			// A component whose Start failed is not stopped.
			_ = sub.Unsubscribe()
			cancel()
			<-c.done
			return err
		}
	}
	return nil
}

func (c *autostopRunner) Stop(ctx context.Context) error {
	var errs []error
	if c.sub != nil {
		errs = append(errs, c.sub.Unsubscribe())
	}
	if c.cancel != nil {
		c.cancel()
		<-c.done
	}
	if c.as != nil {
		errs = append(errs, c.as.Stop(ctx))
	}
	return errors.Join(errs...)
}
