package bus

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/clock"
)

// When the embedded JetStream stops storing (nats-server shuts it down
// when a write fails for lack of space), Ready says so and names the fix;
// it starts again by itself once a probe write succeeds, with the stream
// as it was.
func TestEmbeddedJetStreamOffIsReportedUntilRestart(t *testing.T) {
	clk := clock.NewFake(time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC))
	dir := t.TempDir()
	b, err := Open(context.Background(), Options{StoreDir: dir, SubjectPrefix: "cakework", Stream: "CAKEWORK",
		DuplicateWindow: time.Minute, MaxAge: time.Hour, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close(context.Background()) })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := b.Publish(ctx, "cakework.build.b1.failed", "id-1", []byte(`{}`), nil); err != nil {
		t.Fatal(err)
	}

	// What nats-server does on ENOSPC (handleOutOfSpace).
	if err := b.srv.ShutdownJetStream(); err != nil {
		t.Fatal(err)
	}
	err = b.Ready()
	if !errors.Is(err, ErrStorageOff) || !strings.Contains(err.Error(), "is the disk holding "+dir+" full?") ||
		!strings.Contains(err.Error(), "restart the relay") {
		t.Fatalf("Ready() = %v", err)
	}

	// The disk still full: the probe fails, and Ready says so.
	if err := os.Chmod(dir, 0o500); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() != 0 { // root writes anyway
		b.checkStorage()
		if err := b.Ready(); !errors.Is(err, ErrStorageOff) || !strings.Contains(err.Error(), "probe write") {
			t.Fatalf("Ready() after a failed probe = %v", err)
		}
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	// Room again: Ready says to restart (JetStream is not started again
	// in the running server; see watchStorage).
	b.checkStorage()
	if err := b.Ready(); !errors.Is(err, ErrStorageOff) || !strings.Contains(err.Error(), "has room again") {
		t.Fatalf("Ready() with room again = %v", err)
	}
	// A restart on the same store starts it, with what was stored.
	b.Close(context.Background())
	b2, err := Open(context.Background(), Options{StoreDir: dir, SubjectPrefix: "cakework", Stream: "CAKEWORK",
		DuplicateWindow: time.Minute, MaxAge: time.Hour, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b2.Close(context.Background()) })
	if _, err := b2.Publish(ctx, "cakework.build.b2.failed", "id-2", []byte(`{}`), nil); err != nil {
		t.Fatalf("publish after the restart: %v", err)
	}
	s, err := b2.JetStream().Stream(ctx, "CAKEWORK")
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil || info.State.Msgs != 2 {
		t.Fatalf("stream after the restart: %v, %+v", err, info)
	}
}
