package bus

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cakework-relay/cakework-relay/internal/clock"
)

// Restarted with little room (4 MiB free beside a 24 MiB stream), the
// embedded JetStream stores again once room comes back: its limit is the
// filesystem's size, not 75% of the free space when it started, which
// refused every write for good. (Found by the session-7 review.)
func TestRestartOnALittleRoomStoresOnceThereIsRoom(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs")
	}
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Skipf("mount tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", mnt).Run() })
	clk := clock.NewFake(time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC))
	b, err := Open(context.Background(), Options{StoreDir: filepath.Join(mnt, "js"), SubjectPrefix: "cakework", Stream: "CAKEWORK",
		DuplicateWindow: time.Minute, MaxAge: time.Hour, Clock: clk, CheckInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	big := make([]byte, 1<<20)
	for i := range 24 {
		if _, err := b.Publish(ctx, "cakework.vm.v.log", "m"+string(rune('a'+i)), big, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.StreamSyncer()(); err != nil {
		t.Fatal(err)
	}
	// Something else fills the disk to about 4 MiB free.
	filler := filepath.Join(mnt, "filler")
	f, _ := os.Create(filler)
	for {
		if _, err := f.Write(big); err != nil {
			break
		}
	}
	f.Close()
	for range 4 { // give back 4 MiB
		fi, _ := os.Stat(filler)
		os.Truncate(filler, fi.Size()-(1<<20))
	}
	jetStreamOff(t, b) // nats-server's reaction to the failed write

	b.checkStorage(ctx) // the probe fits: restarted
	t.Logf("after the restart: restarts %d, Ready() = %v", b.EmbeddedRestarts(), b.Ready())
	pctx, pcancel := context.WithTimeout(ctx, 3*time.Second)
	_, err = b.Publish(pctx, "cakework.vm.v.started", "after-1", []byte("x"), nil)
	pcancel()
	t.Logf("publish after the restart with ~4 MiB free: %v", err)

	// The operator frees plenty of space; the relay's checks go on.
	os.Remove(filler)
	for range 5 {
		clk.Advance(storageCheck)
		b.checkStorage(ctx)
	}
	pctx, pcancel = context.WithTimeout(ctx, 3*time.Second)
	defer pcancel()
	_, err = b.Publish(pctx, "cakework.vm.v.started", "after-2", []byte("x"), nil)
	var apiErr *jetstream.APIError
	if err != nil {
		t.Fatalf("publish after space was freed (~40 MiB free, restarts %d, Ready() = %v): %v (api error: %v)",
			b.EmbeddedRestarts(), b.Ready(), err, errors.As(err, &apiErr))
	}
}

// Another process that takes the listen address while the server restarts
// does not leave the relay without a server: the new one takes in-process
// connections only, the relay publishes, and Ready says what happened
// until the relay is restarted. (Found by the session-7 review.)
func TestRestartWithTheAddressTakenKeepsTheRelayWorking(t *testing.T) {
	clk := clock.NewFake(time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC))
	b := openStorageBus(t, clk, "127.0.0.1:0")
	addr := b.server().Addr().String()
	jetStreamOff(t, b)
	// The gap of a restart, made deterministic: the old server is down
	// and someone else binds its address before the new one can.
	old := b.emb.cur.Swap(nil)
	old.Shutdown()
	old.WaitForShutdown()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("could not take %s for the test: %v", addr, err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b.checkStorage(ctx)
	if err := b.Ready(); err == nil || !strings.Contains(err.Error(), "in-process connections only") || !strings.Contains(err.Error(), addr) {
		t.Fatalf("Ready() = %v, want it to say the server is in-process only and whose address was taken", err)
	}
	if _, err := b.Publish(ctx, "cakework.vm.v.started", "after", []byte("x"), nil); err != nil {
		t.Fatalf("the relay cannot publish after the restart: %v", err)
	}
}
