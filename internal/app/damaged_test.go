package app

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/journal"
	"github.com/cakework-relay/cakework-relay/internal/state"
)

// A relay.db lost together with the journal, beside an embedded stream
// that holds the events it published, stops the relay: starting fresh
// would publish them again.
func TestNewStateBesideANonEmptyStreamIsRefused(t *testing.T) {
	cfg := testConfig(t)
	a, err := New(Options{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	st := a.Core().Store
	if err := st.Accept(ctx, func(tx *state.AcceptTx) error {
		return tx.Enqueue("cakework.build.b1.succeeded", "evt-b1", []byte(`{}`))
	}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); st.OutboxDepth() > 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the event did not reach the stream")
		}
	}
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := a.Stop(sctx); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{state.FileName, journal.DirName} {
		if err := os.RemoveAll(filepath.Join(cfg.DataDir, p)); err != nil {
			t.Fatal(err)
		}
	}
	b, err := New(Options{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	err = b.Start(ctx)
	if err == nil {
		b.Stop(sctx)
		t.Fatal("started on a new relay.db beside a stream with messages")
	}
	if !errors.Is(err, state.ErrStateLost) || !strings.Contains(err.Error(), "holds 1 message(s)") ||
		!strings.Contains(err.Error(), "restore relay.db from a backup together with journal/") {
		t.Fatalf("error does not say what is wrong and what to do: %v", err)
	}
}
