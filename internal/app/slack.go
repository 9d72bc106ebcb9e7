package app

import (
	"context"
	"fmt"

	"github.com/cakework-relay/cakework-relay/internal/sinks"
	"github.com/cakework-relay/cakework-relay/internal/sinks/slack"
)

// addSlackSinks adds one runner per sinks.slack entry to m, by an explicit
// loop over the config, and reports each entry's token on /readyz as
// "slack <name>". On error, the senders built so far are closed (they run
// a background flusher).
func addSlackSinks(d *Deps, m *sinks.Manager) error {
	var built []*slack.Sender
	fail := func(err error) error {
		for _, s := range built {
			_ = s.Close(context.Background())
		}
		return err
	}
	for i, c := range d.Config.Sinks.Slack {
		s, err := slack.New(c, slack.Options{
			Store:      d.Store,
			Clock:      d.Clock,
			Logger:     d.Logger,
			HTTPClient: d.HTTPClient,
			ConfigPath: fmt.Sprintf("sinks.slack[%d]", i),
		})
		if err != nil {
			return fail(err)
		}
		built = append(built, s)
		if _, err := m.Add(s, s.SinkOptions()); err != nil {
			return fail(fmt.Errorf("sinks.slack[%d] (%s): %w", i, c.Name, err))
		}
		d.HTTP.AddReadyCheck("slack "+c.Name, s.Ready)
	}
	return nil
}
