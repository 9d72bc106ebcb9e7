package app

import "github.com/cakework-relay/cakework-relay/internal/statuspage"

// newStatusPage builds the status page at GET / (internal/statuspage) on
// the core: the admin token signs in, the HTTP server's status map and
// admin routes feed it, the bus gives its events and the registry its
// rate charts. With no admin token it only says how to turn it on.
func newStatusPage(c *Core) (*statuspage.Page, error) {
	p, err := statuspage.New(statuspage.Options{
		Token:      c.Config.HTTP.AdminToken,
		HTTP:       c.HTTP,
		Bus:        c.Bus,
		Gatherer:   c.Registry,
		Registerer: c.Registry,
		Clock:      c.Clock,
		Logger:     c.Logger,
	})
	if err != nil {
		return nil, err
	}
	p.Register()
	return p, nil
}
