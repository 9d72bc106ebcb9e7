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
func TestEmbeddedJetStreamComesBackAfterRunningOutOfSpace(t *testing.T) {
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
		!strings.Contains(err.Error(), "starts again by itself") {
		t.Fatalf("Ready() = %v", err)
	}
	pctx, pcancel := context.WithTimeout(ctx, time.Second)
	if _, err := b.Publish(pctx, "cakework.build.b2.failed", "id-2", []byte(`{}`), nil); err == nil {
		t.Fatal("published while JetStream is off")
	}
	pcancel()

	// The disk still full: the probe fails, and JetStream stays off.
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

	// Room again: the next check (on the injected clock) starts it.
	for clk.Waiters() == 0 {
		time.Sleep(time.Millisecond)
	}
	clk.Advance(storageCheck)
	for deadline := time.Now().Add(10 * time.Second); b.Ready() != nil; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("still not ready: %v", b.Ready())
		}
	}
	if _, err := b.Publish(ctx, "cakework.build.b2.failed", "id-2", []byte(`{}`), nil); err != nil {
		t.Fatalf("publish after recovery: %v", err)
	}
	s, err := b.JetStream().Stream(ctx, "CAKEWORK")
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil || info.State.Msgs != 2 {
		t.Fatalf("stream after recovery: %v, %+v", err, info)
	}
}

func TestResizeHelps(t *testing.T) {
	const g = 1 << 30
	for _, tt := range []struct {
		used, limit, free int64
		want              bool
	}{
		{used: 95, limit: 100, free: 10 * g, want: true},  // full limit, room now
		{used: 95, limit: 100, free: 20, want: false},     // full limit, disk still full
		{used: 10, limit: 100, free: 10 * g, want: false}, // room in the limit
	} {
		if got := resizeHelps(tt.used, tt.limit, tt.free); got != tt.want {
			t.Errorf("resizeHelps(%d, %d, %d) = %v", tt.used, tt.limit, tt.free, got)
		}
	}
}
