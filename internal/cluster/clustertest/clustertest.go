// Package clustertest runs a real JetStream cluster of embedded NATS
// servers with routes on loopback, for tests of the fleet.
package clustertest

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Cluster is n embedded servers routed to each other.
type Cluster struct {
	t       testing.TB
	Servers []*server.Server
	opts    []*server.Options
}

func freePorts(t testing.TB, n int) []int {
	var ls []net.Listener
	var ps []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ps = append(ps, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return ps
}

// Start runs n servers (3 for a quorum) and waits until JetStream has a
// meta leader. They are shut down when the test ends.
func Start(t testing.TB, n int) *Cluster {
	t.Helper()
	ports := freePorts(t, 2*n)
	c := &Cluster{t: t}
	for i := range n {
		var routes []*url.URL
		for j := range n {
			if j != i {
				routes = append(routes, &url.URL{Scheme: "nats", Host: fmt.Sprintf("127.0.0.1:%d", ports[n+j])})
			}
		}
		o := &server.Options{
			ServerName: fmt.Sprintf("n%d", i+1),
			Host:       "127.0.0.1",
			Port:       ports[i],
			JetStream:  true,
			StoreDir:   t.TempDir(),
			NoSigs:     true,
			NoLog:      true,
			Cluster:    server.ClusterOpts{Name: "relay-test", Host: "127.0.0.1", Port: ports[n+i]},
			Routes:     routes,
		}
		c.opts = append(c.opts, o)
		c.Servers = append(c.Servers, nil)
		c.StartNode(i)
	}
	t.Cleanup(c.Shutdown)
	c.WaitMeta()
	c.WaitPlacement()
	return c
}

// WaitPlacement waits until a stream with a replica on every node can be
// placed: until then JetStream answers "no suitable peers for placement",
// and a relay started on the cluster would not be ready at once.
func (c *Cluster) WaitPlacement() {
	c.t.Helper()
	nc, err := nats.Connect(c.NodeURL(0))
	if err != nil {
		c.t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "CLUSTERTEST_PROBE", Subjects: []string{"clustertest.probe"},
			Replicas: len(c.Servers), Storage: jetstream.MemoryStorage})
		if err == nil {
			_ = js.DeleteStream(ctx, "CLUSTERTEST_PROBE")
			return
		}
		if ctx.Err() != nil {
			c.t.Fatalf("no stream with %d replicas could be placed in 30s: %v", len(c.Servers), err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// StartNode (re)starts node i on its port and store.
func (c *Cluster) StartNode(i int) {
	c.t.Helper()
	s, err := server.NewServer(c.opts[i])
	if err != nil {
		c.t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		c.t.Fatalf("node %d did not start", i+1)
	}
	c.Servers[i] = s
}

// StopNode shuts node i down.
func (c *Cluster) StopNode(i int) {
	if s := c.Servers[i]; s != nil {
		s.Shutdown()
		s.WaitForShutdown()
	}
}

// Shutdown stops every node.
func (c *Cluster) Shutdown() {
	for i := range c.Servers {
		c.StopNode(i)
	}
}

// URL is every node's client URL, comma-separated (bus.url).
func (c *Cluster) URL() string {
	var us []string
	for _, o := range c.opts {
		us = append(us, fmt.Sprintf("nats://127.0.0.1:%d", o.Port))
	}
	return strings.Join(us, ",")
}

// NodeURL is node i's client URL.
func (c *Cluster) NodeURL(i int) string { return fmt.Sprintf("nats://127.0.0.1:%d", c.opts[i].Port) }

// WaitMeta waits until JetStream's meta group has a leader, so streams can
// be created.
func (c *Cluster) WaitMeta() {
	c.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		for _, s := range c.Servers {
			if s != nil && s.Running() && s.JetStreamIsLeader() {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.t.Fatal("the JetStream cluster elected no meta leader in 20s")
}

// Connect connects to node i with JetStream.
func (c *Cluster) Connect(i int) (*nats.Conn, jetstream.JetStream) {
	c.t.Helper()
	nc, err := nats.Connect(c.NodeURL(i), nats.MaxReconnects(-1))
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		c.t.Fatal(err)
	}
	return nc, js
}
