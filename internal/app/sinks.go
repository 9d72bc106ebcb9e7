package app

import (
	"fmt"
	"log/slog"

	"github.com/cakework-relay/cakework-relay/internal/sinks"
	"github.com/cakework-relay/cakework-relay/internal/sinks/httpcb"
	"github.com/cakework-relay/cakework-relay/internal/sinks/slack"
)

// sinkEntry is one configured sink, before it is built.
type sinkEntry struct {
	path, name, kind string
	// build makes the sender with log, already scoped to the sink. It
	// starts nothing: the runner connects the sender at Start.
	build func(log *slog.Logger) (sender sinks.Sender, o sinks.Options, err error)
}

// sinksComponent builds one sink runner per configured sink, in one loop
// over the config, on a shared sinks.Manager that also serves the DLQ admin
// routes and the "sinks" status section. Senders start nothing when built
// (their background work begins at Connect), so a failure half way leaves
// nothing to clean up. Auto-stop is a producer (autostop.go).
func newSinks(d *Core) (*sinks.Manager, error) {
	member, pinnedTTL := fleetMember(d)
	m := sinks.NewManager(sinks.ManagerOptions{
		Bus:        d.Bus,
		Store:      d.Store,
		Records:    sinkRecords(d),
		Member:     member,
		PinnedTTL:  pinnedTTL,
		Clock:      d.Clock,
		Logger:     d.Logger,
		Registerer: d.Registry,
	})
	for _, e := range sinkEntries(d) {
		log := d.Logger.With("sink", e.name, "kind", e.kind)
		s, o, err := e.build(log)
		if err != nil {
			return nil, err
		}
		o.Logger = log
		if _, err := m.Add(s, o); err != nil {
			return nil, fmt.Errorf("%s (%s): %w", e.path, e.name, err)
		}
	}
	m.Register(d.HTTP)
	return m, nil
}

// sinkEntries lists the configured sinks, HTTP callbacks then Slack, in
// config order. A Slack entry also reports its token on /readyz as
// "slack <name>".
func sinkEntries(d *Core) []sinkEntry {
	var es []sinkEntry
	for i, c := range d.Config.Sinks.HTTP {
		path := fmt.Sprintf("sinks.http[%d]", i)
		es = append(es, sinkEntry{path: path, name: c.Name, kind: "http",
			build: func(log *slog.Logger) (sinks.Sender, sinks.Options, error) {
				s, err := httpcb.New(c, httpcb.Options{Logger: log, UserAgent: "cakework-relay/" + d.Version, ConfigPath: path})
				if err != nil {
					return nil, sinks.Options{}, err
				}
				return s, s.SinkOptions(), nil
			}})
	}
	for i, c := range d.Config.Sinks.Slack {
		path := fmt.Sprintf("sinks.slack[%d]", i)
		es = append(es, sinkEntry{path: path, name: c.Name, kind: "slack",
			build: func(log *slog.Logger) (sinks.Sender, sinks.Options, error) {
				s, err := slack.New(c, slack.Options{
					Store:      d.Store,
					Records:    sinkRecords(d),
					Clock:      d.Clock,
					Logger:     log,
					HTTPClient: d.HTTPClient,
					ConfigPath: path,
				})
				if err != nil {
					return nil, sinks.Options{}, err
				}
				d.HTTP.AddReadyCheck("slack "+c.Name, s.Ready)
				return s, s.SinkOptions(), nil
			}})
	}
	return es
}
