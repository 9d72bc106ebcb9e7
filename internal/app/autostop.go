package app

import (
	"context"
	"errors"

	"github.com/nats-io/nats.go"

	"github.com/cakework-relay/cakework-relay/internal/autostop"
	"github.com/cakework-relay/cakework-relay/internal/poller"
)

// newAutostop records activity signals (admin API and NATS) always, and
// runs the auto-stopper when sinks.autostop.enabled, on this process's
// poller's knowledge (p; nil when the poller is off). It adds the
// "autostop" status section: each started VM's idle clock and stop time.
func newAutostop(d *Core, p *poller.Poller) (*autostopRunner, error) {
	sig := autostop.Signals{Store: autostop.StateStore(d.Store), Clock: d.Clock}
	store := sig.Store
	if d.Fleet != nil {
		// Signals go to the leader, which keeps the idle clocks in the
		// fleet's knowledge; it answers relay.vm.activity itself.
		store = d.Fleet.store.Autostop()
		autostop.Signals{Remote: d.Fleet.remote.Activity}.Mount(d.HTTP.Admin())
		sig = d.Fleet.signals
	} else {
		sig.Mount(d.HTTP.Admin())
	}
	c := &autostopRunner{sig: sig, nc: d.Bus.Conn()}
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

type autostopRunner struct {
	sig autostop.Signals
	nc  *nats.Conn
	sub *nats.Subscription
	as  *autostop.AutoStop
}

func (c *autostopRunner) Name() string { return "autostop" }

func (c *autostopRunner) Start(ctx context.Context) error {
	sub, err := c.sig.Subscribe(c.nc)
	if err != nil {
		return err
	}
	c.sub = sub
	if c.as != nil {
		if err := c.as.Start(ctx); err != nil {
			// A component whose Start failed is not stopped.
			_ = sub.Unsubscribe()
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
	if c.as != nil {
		errs = append(errs, c.as.Stop(ctx))
	}
	return errors.Join(errs...)
}
