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
// poller's knowledge (p; nil when the poller is off).
func newAutostop(d *Core, p *poller.Poller) (*autostopRunner, error) {
	sig := autostop.Signals{Store: d.Store, Clock: d.Clock}
	if p != nil {
		sig.Known = func(id string) bool { return p.VMKnowledge(id).Known }
	}
	sig.Mount(d.HTTP.Admin())
	c := &autostopRunner{sig: sig, nc: d.Bus.Conn()}
	cfg := d.Config.Sinks.Autostop
	if !cfg.Enabled {
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
		Store:         d.Store,
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
