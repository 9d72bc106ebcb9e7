package app

import (
	"fmt"

	"github.com/cakework-relay/cakework-relay/internal/sinks"
	"github.com/cakework-relay/cakework-relay/internal/sinks/httpcb"
)

// sinksComponent builds one sink runner per configured sink, by an explicit
// loop per kind, on a shared sinks.Manager that also serves the DLQ admin
// routes and the "sinks" status section. Slack and auto-stop add their loops
// here.
func sinksComponent(d *Deps) (Component, error) {
	m := sinks.NewManager(sinks.ManagerOptions{
		Bus:        d.Bus,
		Store:      d.Store,
		Clock:      d.Clock,
		Logger:     d.Logger,
		Registerer: d.Registry,
	})
	for _, c := range d.Config.Sinks.HTTP {
		s, err := httpcb.New(c, httpcb.Options{Logger: d.Logger, UserAgent: "cakework-relay/" + d.Version})
		if err != nil {
			return nil, err
		}
		if _, err := m.Add(s, s.SinkOptions()); err != nil {
			return nil, fmt.Errorf("sinks.http %s: %w", c.Name, err)
		}
	}
	if err := addSlackSinks(d, m); err != nil {
		return nil, err
	}
	m.Register(d.HTTP)
	return m, nil
}
