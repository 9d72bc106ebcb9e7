package bus

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/backoff"
)

// storageCheck is how often the embedded server's storage is checked.
const storageCheck = 10 * time.Second

// newRestartSched paces the restarts of the embedded server that failed
// (the disk filled again): 30s doubling to 5m, on the injected clock.
func newRestartSched() backoff.Backoff {
	return backoff.Backoff{Initial: 30 * time.Second, Max: 5 * time.Minute, Jitter: -1}
}

// minRestartRoom is the free space the embedded server is restarted with
// at least: 1% of the filesystem, and not less than 16 MiB (nor more than
// 1 GiB).
func minRestartRoom(dir string) int64 {
	return min(max(filesystemSize(dir)/100, 16<<20), 1<<30)
}

// probeBytes is what a probe writes (and syncs, then removes) in the store
// directory before JetStream is started again: room for more than one
// message block's header and index.
const probeBytes = 1 << 20

// ErrStorageOff is wrapped by Ready while the embedded JetStream is off.
var ErrStorageOff = errors.New("bus: the embedded JetStream is off")

// watchStorage watches the embedded JetStream's storage. nats-server
// shuts JetStream down when a write fails for lack of space (its storage
// limit is the filesystem's size: newServer). Every storageCheck, while
// JetStream is off, a probe file is written and synced in the store
// directory; once that succeeds and minRestartRoom is free, the embedded
// server is restarted in-process (restartEmbedded), which starts JetStream
// on the same store. Events wait in the journal and the outbox meanwhile.
//
// It does not call EnableJetStream in the running server: that rewrites
// the account's JetStream exports while API requests (the sinks' pulls)
// are dispatched through them, a data race in nats-server v2.15.3 that the
// race detector found. A new server has none of that state.
func (b *Bus) watchStorage() {
	defer close(b.storageDone)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-b.stopEnsure: // Close: stop waiting for a restart
			cancel()
		case <-ctx.Done():
		}
	}()
	for {
		select {
		case <-b.stopEnsure:
			return
		case <-b.opts.Clock.After(storageCheck):
		}
		b.checkStorage(ctx)
	}
}

// checkStorage is one pass of watchStorage; tests call it too (it holds
// storageMu).
func (b *Bus) checkStorage(ctx context.Context) {
	b.storageMu.Lock()
	defer b.storageMu.Unlock()
	now := b.opts.Clock.Now()
	if srv := b.server(); srv == nil || !srv.JetStreamEnabled() {
		if !b.restartWhenRoom(ctx, now) {
			return
		}
	}
	if b.offSince.IsZero() {
		return
	}
	// JetStream is back: the streams are on the store, ensure them anyway.
	sctx, cancel := context.WithTimeout(ctx, b.opts.ReadyTimeout)
	err := b.ensureStreams(sctx)
	cancel()
	if err != nil {
		b.streamsReady.Store(false)
		b.setStreamErr(err)
		b.storageHealth(now, fmt.Errorf("after the restart of the embedded NATS server: %w", err))
		return
	}
	b.log.Info("bus: the embedded JetStream stores again (its server was restarted in the relay once the disk had room)",
		"off_for", now.Sub(b.offSince), "store_dir", b.opts.StoreDir)
	b.offSince, b.nextRestart = time.Time{}, time.Time{}
	b.restartSched.Reset()
	b.storageErr.Store(nil)
	b.storage.OK(now)
}

// restartWhenRoom handles a JetStream that is off: it says so once, then
// probes the disk and restarts the embedded server when the probe write
// succeeds and no failed restart's backoff is running. It reports whether
// JetStream is on again.
func (b *Bus) restartWhenRoom(ctx context.Context, now time.Time) bool {
	if b.offSince.IsZero() {
		b.offSince = now
		b.log.Warn("bus: the embedded JetStream stopped storing (a write failed: is the disk full?); events wait in the outbox; the relay restarts its embedded NATS server once a probe write succeeds",
			"store_dir", b.opts.StoreDir)
	}
	if now.Before(b.nextRestart) {
		return false
	}
	if err := probe(b.opts.StoreDir); err != nil {
		b.storageHealth(now, fmt.Errorf("probe write in %s: %w", b.opts.StoreDir, err))
		return false
	}
	// A disk that hovers at full would have the server restarted (every
	// TCP client dropped, the store recovered) at every check: wait for
	// some room first.
	if free, need := freeSpace(b.opts.StoreDir), minRestartRoom(b.opts.StoreDir); free >= 0 && free < need {
		b.storageHealth(now, fmt.Errorf("%d MiB free in %s; the embedded NATS server is restarted once %d MiB are", free>>20, b.opts.StoreDir, need>>20))
		return false
	}
	if b.restartSched.Attempts() == 0 { // later attempts: storageHealth's rate-limited line
		b.log.Warn("bus: the disk has room again (a probe write succeeded); restarting the embedded NATS server to start JetStream", "store_dir", b.opts.StoreDir)
	}
	if err := b.restartEmbedded(ctx); err != nil {
		b.nextRestart = now.Add(b.restartSched.Next())
		b.storageHealth(now, fmt.Errorf("restart of the embedded NATS server failed: %w; next attempt at %s", err, b.nextRestart.UTC().Format(time.RFC3339)))
		return false
	}
	return true
}

// storageHealth records a failed recovery, logged when it starts and at
// most every health.DefaultRepeat.
func (b *Bus) storageHealth(now time.Time, err error) {
	s := err.Error()
	b.storageErr.Store(&s)
	if ch, _ := b.storage.Fail(now, err); ch != 0 {
		b.log.Warn("bus: the embedded JetStream cannot store yet; events wait in the outbox", "err", err, "store_dir", b.opts.StoreDir)
	}
}

// probe writes and syncs probeBytes in dir, then removes the file.
func probe(dir string) error {
	p := filepath.Join(dir, ".relay-space-probe")
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(make([]byte, probeBytes))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if rerr := os.Remove(p); err == nil {
		err = rerr
	}
	return err
}
