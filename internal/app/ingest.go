package app

import "github.com/cakework-relay/cakework-relay/internal/ingest"

// newIngest builds the webhook receivers and mounts them on the HTTP
// server's public router.
func newIngest(d *Core) (*ingest.Ingest, error) {
	in, err := ingest.New(ingest.Options{
		Config:               d.Config.Ingest,
		MaxBodyBytes:         d.Config.HTTP.MaxBodyBytes,
		MaxBodyBytesInFlight: d.Config.HTTP.MaxBodyBytesInFlight,
		SubjectPrefix:        d.Config.Bus.SubjectPrefix,
		IDs:                  d.IDs,
		Store:                d.Store,
		Clock:                d.Clock,
		Logger:               d.Logger,
		Registerer:           d.Registry,
		// The poller runs when there is an API key (see newPoller).
		WatchBuilds:      d.Config.Cakework.APIKey != "",
		Fleet:            ingestFleet(d),
		MaxQueuedWatches: d.Config.Poller.Builds.MaxWatched,
	})
	if err != nil {
		return nil, err
	}
	in.Mount(d.HTTP)
	return in, nil
}
