package app

import "fmt"

// buildProducers builds ingest, the poller (off without an API key) and
// auto-stop on the core, each registered explicitly here, never by
// init(). Nothing starts yet.
func buildProducers(c *Core) (*Producers, error) {
	in, err := newIngest(c)
	if err != nil {
		return nil, fmt.Errorf("ingest: %w", err)
	}
	p, err := newPoller(c)
	if err != nil {
		return nil, err
	}
	as, err := newAutostop(c, p)
	if err != nil {
		return nil, err
	}
	if c.Fleet != nil {
		// In a fleet the poller and auto-stop run only at the leader, for
		// as long as it leads.
		c.Fleet.poller, c.Fleet.autostop = p, as
		return &Producers{Ingest: in, Poller: p, Autostop: as, fleet: c.Fleet}, nil
	}
	return &Producers{Ingest: in, Poller: p, Autostop: as}, nil
}

// components lists the producers in start order.
func (p *Producers) components() []Component {
	cs := []Component{p.Ingest}
	if p.fleet != nil {
		return append(cs, p.fleet)
	}
	if p.Poller != nil {
		cs = append(cs, p.Poller)
	}
	return append(cs, p.Autostop)
}

// buildConsumers builds the sink runners on the core.
func buildConsumers(c *Core) (*Consumers, error) {
	m, err := newSinks(c)
	if err != nil {
		return nil, err
	}
	return &Consumers{Sinks: m}, nil
}

// components lists the consumers in start order.
func (c *Consumers) components() []Component { return []Component{c.Sinks} }
