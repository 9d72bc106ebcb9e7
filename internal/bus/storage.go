package bus

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// storageCheck is how often the embedded server's storage is checked.
const storageCheck = 10 * time.Second

// probeBytes is what a probe writes (and syncs, then removes) in the store
// directory before JetStream is started again: room for more than one
// message block's header and index.
const probeBytes = 1 << 20

// ErrStorageOff is wrapped by Ready while the embedded JetStream is off.
var ErrStorageOff = errors.New("bus: the embedded JetStream is off")

// watchStorage keeps the embedded JetStream storing once the disk has room
// again, without a restart. nats-server shuts JetStream down when a write
// fails for lack of space, and sizes its storage limit from the disk's free
// space when JetStream starts: a relay started on a nearly full disk is
// refused ("insufficient resources") even after space is freed. Every
// storageCheck, when JetStream is off, or its stored bytes are near that
// limit while the disk now has more room than the limit allowed for, a
// probe file is written and synced in the store directory; once that
// succeeds JetStream is started again (it recovers the streams and
// consumers from disk) with its limit sized from the disk as it is now.
func (b *Bus) watchStorage() {
	defer close(b.storageDone)
	for {
		select {
		case <-b.stopEnsure:
			return
		case <-b.opts.Clock.After(storageCheck):
		}
		b.checkStorage()
	}
}

// checkStorage is one pass of watchStorage.
func (b *Bus) checkStorage() {
	now := b.opts.Clock.Now()
	off := !b.srv.JetStreamEnabled()
	if off && b.offSince.IsZero() {
		b.offSince = now
		b.log.Warn("bus: the embedded JetStream stopped storing (a write failed: is the disk full?); events wait in the outbox, and it starts again by itself once the disk has room",
			"store_dir", b.opts.StoreDir)
	}
	if !off && !b.needsResize() {
		return
	}
	if err := probe(b.opts.StoreDir); err != nil {
		b.storageHealth(fmt.Errorf("probe write in %s: %w", b.opts.StoreDir, err))
		return
	}
	if !off {
		b.log.Warn("bus: JetStream's storage limit was sized on a fuller disk; restarting JetStream to size it from the disk as it is now")
		if err := b.srv.ShutdownJetStream(); err != nil {
			b.storageHealth(fmt.Errorf("stop JetStream to resize it: %w", err))
			return
		}
	}
	if err := b.srv.EnableJetStream(b.jsConfig()); err != nil {
		b.storageHealth(fmt.Errorf("start JetStream again: %w", err))
		return
	}
	b.storageErr.Store(nil)
	b.storage.OK(now)
	if off {
		b.log.Warn("bus: the embedded JetStream is storing again", "was_off_for", now.Sub(b.offSince).Round(time.Second))
	}
	b.offSince = time.Time{}
}

// storageHealth records a failed recovery, logged when it starts and at
// most every health.DefaultRepeat.
func (b *Bus) storageHealth(err error) {
	s := err.Error()
	b.storageErr.Store(&s)
	if ch, _ := b.storage.Fail(b.opts.Clock.Now(), err); ch != 0 {
		b.log.Warn("bus: the embedded JetStream cannot store; it starts again by itself once the disk has room", "err", err, "store_dir", b.opts.StoreDir)
	}
}

// needsResize: the stored bytes are within a tenth of JetStream's limit,
// and the disk now has room for a limit at least a quarter larger.
func (b *Bus) needsResize() bool {
	cfg := b.srv.JetStreamConfig()
	if cfg == nil || cfg.MaxStore <= 0 {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	info, err := b.js.AccountInfo(ctx)
	if err != nil {
		return false
	}
	free, err := b.freeBytes(b.opts.StoreDir)
	if err != nil {
		return false
	}
	return resizeHelps(int64(info.Store), cfg.MaxStore, free)
}

// resizeHelps decides needsResize: used of limit bytes stored, free bytes
// on the disk. JetStream sizes a dynamic limit as what it stores plus three
// quarters of the free space.
func resizeHelps(used, limit, free int64) bool {
	return used >= limit-limit/10 && used+free/4*3 >= limit+limit/4
}

// jsConfig is the JetStream configuration the server started with, minus
// the limits, so EnableJetStream sizes them again (as at start).
func (b *Bus) jsConfig() *server.JetStreamConfig {
	return &server.JetStreamConfig{StoreDir: b.opts.StoreDir}
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
