package app

import (
	"github.com/cakework-relay/cakework-relay/internal/cakework"
	"github.com/cakework-relay/cakework-relay/internal/poller"
)

// newPoller builds the cron-driven poller (internal/poller) and mounts its
// admin routes (/v1/watches...), the "cakework" readiness check and the
// "poller" status section. With no API key the poller is off (nil): the log
// says so once.
func newPoller(d *Core) (*poller.Poller, error) {
	if d.Config.Cakework.APIKey == "" {
		const reason = "no Cakework API key (set cakework.api_key or CAKEWORK_API_KEY)"
		d.Logger.Info("poller off: " + reason)
		poller.RegisterOff(d.HTTP, reason)
		return nil, nil
	}
	o := poller.Options{
		Config: d.Config.Poller,
		Cakework: cakework.Options{
			BaseURL:    d.Config.Cakework.URL,
			APIKey:     d.Config.Cakework.APIKey,
			Version:    d.Version,
			Timeout:    d.Config.Cakework.Timeout,
			RateLimit:  d.Config.Cakework.RateLimit,
			HTTPClient: d.HTTPClient,
		},
		SubjectPrefix: d.Config.Bus.SubjectPrefix,
		IDs:           d.IDs,
		Store:         poller.StateStore(d.Store),
		NATS:          d.Bus.Conn(),
		Clock:         d.Clock,
		Logger:        d.Logger,
		Registerer:    d.Registry,
	}
	if d.Fleet != nil {
		o.Store, o.Remote = d.Fleet.store, d.Fleet.remote
	}
	p, err := poller.New(o)
	if err != nil {
		return nil, err
	}
	p.Register(d.HTTP)
	return p, nil
}
