//go:build linux

package bus

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/clock"
)

// Close while the embedded server is being restarted keeps to Close's
// own deadline: the restart is abandoned, not awaited for ReadyTimeout
// (twice, with the fallback server), and no server is left running.
// (Left open by the session-7 review.)
//
// The restarted server's start is made slow for real: the stream's
// metadata file is a FIFO that nobody writes, so nats-server's JetStream
// recovery blocks reading it, as on a disk that hangs.
func TestCloseDuringARestartKeepsItsDeadline(t *testing.T) {
	const readyTimeout = 20 * time.Second
	dir, err := os.MkdirTemp("", "bus-close-restart-")
	if err != nil {
		t.Fatal(err)
	}
	// The abandoned start ends in the background once the FIFO is
	// written; remove what it leaves as it goes.
	t.Cleanup(func() {
		for range 50 {
			if os.RemoveAll(dir) == nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	clk := clock.NewFake(time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC))
	b, err := Open(context.Background(), Options{StoreDir: dir, SubjectPrefix: "cakework", Stream: "CAKEWORK",
		DuplicateWindow: time.Minute, MaxAge: time.Hour, Clock: clk, CheckInterval: -1, ReadyTimeout: readyTimeout})
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			b.Close(context.Background())
		}
	})
	meta := filepath.Join(dir, "jetstream", "$G", "streams", "CAKEWORK", "meta.inf")
	if _, err := os.Stat(meta); err != nil {
		t.Fatalf("the stream's metadata is not where the test expects it: %v", err)
	}
	jetStreamOff(t, b)
	if err := os.Remove(meta); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(meta, 0o600); err != nil {
		t.Skipf("cannot make a FIFO: %v", err)
	}

	// The next storage check, on the injected clock, restarts the server.
	for clk.Waiters() == 0 {
		time.Sleep(time.Millisecond)
	}
	clk.Advance(storageCheck)
	// The restart is under way once its server opened the FIFO to read it
	// (a writer can then open it without blocking). The writer is held
	// open, so the read blocks until the test ends.
	var w *os.File
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		w, err = os.OpenFile(meta, os.O_WRONLY|syscall.O_NONBLOCK, 0)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.ENXIO) || time.Now().After(deadline) {
			t.Fatalf("the restarted server never read the stream's metadata: %v", err)
		}
	}
	t.Cleanup(func() { w.Close() }) // the abandoned start reads EOF and ends

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- b.Close(ctx) }()
	// Ordering, not a tight timing: Close must return before even half
	// of the restart's ReadyTimeout has passed (the old code waited all
	// of it, then started a fallback server).
	select {
	case err := <-done:
		closed = true
		t.Logf("Close: %v", err)
	case <-time.After(readyTimeout / 2):
		t.Fatal("Close is still waiting for the restart of the embedded server, past its own deadline")
	}
	if srv := b.server(); srv != nil {
		t.Fatal("a server is still installed after Close")
	}
	if c, err := b.emb.InProcessConn(); err == nil {
		c.Close()
		t.Fatal("the bus still takes in-process connections after Close")
	}
	// Once the hung start can go on, it is shut down, and no server comes
	// up after Close: the storage loop has ended.
	w.Close()
	select {
	case <-b.storageDone:
	case <-time.After(readyTimeout):
		t.Fatal("the storage loop did not end after Close")
	}
	if b.server() != nil {
		t.Fatal("the abandoned restart installed a server after Close")
	}
}
