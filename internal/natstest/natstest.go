// Package natstest starts a standalone nats-server for tests: an external
// NATS on loopback, with the users and limits a test gives it.
package natstest

import (
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Start runs a nats-server with o, JetStream on, and shuts it down when the
// test ends. Unset, Host is loopback, Port a free one and StoreDir a
// temporary directory; signals are left to the test process.
func Start(t testing.TB, o server.Options) *server.Server {
	t.Helper()
	o.JetStream, o.NoSigs = true, true
	if o.Host == "" {
		o.Host = "127.0.0.1"
	}
	if o.Port == 0 {
		o.Port = -1
	}
	if o.StoreDir == "" {
		o.StoreDir = t.TempDir()
	}
	srv, err := server.NewServer(&o)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		t.Fatal("nats-server did not start")
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	return srv
}
