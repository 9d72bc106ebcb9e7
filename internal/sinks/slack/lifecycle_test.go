package slack

import (
	"context"
	"strings"
	"testing"

	"github.com/cakework-relay/cakework-relay/internal/sinks"
	"github.com/cakework-relay/cakework-relay/internal/sinks/sinktest"
)

var (
	_ sinks.Connector = (*Sender)(nil)
	_ sinks.Closer    = (*Sender)(nil)
)

// New starts nothing; Connect starts the token check once; Close works
// with or without Connect, twice too; a closed sender cannot reconnect.
func TestLifecycle(t *testing.T) {
	f := newFakeSlack(t, nil)
	s, err := New(botConfig(f), Options{Store: openStore(t, t.TempDir()), Clock: sinktest.NewStepClock(t0), ConfigPath: "sinks.slack[0]"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := s.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, "auth.test", func() bool { f.mu.Lock(); defer f.mu.Unlock(); return f.authCalls == 1 })
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	calls := f.authCalls
	f.mu.Unlock()
	if calls != 1 {
		t.Fatalf("%d auth.test calls, want 1 (Connect twice is one connection)", calls)
	}
	if err := s.Connect(ctx); err == nil || !strings.Contains(err.Error(), "after close") {
		t.Fatalf("Connect after Close: %v", err)
	}

	never, err := New(botConfig(f), Options{Store: openStore(t, t.TempDir()), ConfigPath: "sinks.slack[0]"})
	if err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel() // nothing to wait for: Close must not need the time
	if err := never.Close(cctx); err != nil {
		t.Fatalf("Close without Connect: %v", err)
	}
}
