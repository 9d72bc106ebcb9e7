package bus

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// storageCheck is how often the embedded server's storage is checked.
const storageCheck = 10 * time.Second

// probeBytes is what a probe writes (and syncs, then removes) in the store
// directory before JetStream is started again: room for more than one
// message block's header and index.
const probeBytes = 1 << 20

// ErrStorageOff is wrapped by Ready while the embedded JetStream is off.
var ErrStorageOff = errors.New("bus: the embedded JetStream is off")

// watchStorage watches the embedded JetStream's storage. nats-server
// shuts JetStream down when a write fails for lack of space, and sizes its
// storage limit from the disk's free space when JetStream starts. Every
// storageCheck, while JetStream is off, a probe file is written and synced
// in the store directory, and Ready says whether the disk has room again.
//
// It does not start JetStream again in the running server: nats-server's
// EnableJetStream rewrites the account's JetStream exports while API
// requests (the sinks' pulls) are dispatched through them, a data race in
// nats-server v2.15.3 that the race detector found. A restart of the relay
// starts it safely (and sizes the limit from the disk as it is then);
// events wait in the journal and the outbox meanwhile.
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
	if b.srv.JetStreamEnabled() {
		return
	}
	if b.offSince.IsZero() {
		b.offSince = now
		b.log.Warn("bus: the embedded JetStream stopped storing (a write failed: is the disk full?); events wait in the outbox; restart the relay once the disk has room",
			"store_dir", b.opts.StoreDir)
	}
	if err := probe(b.opts.StoreDir); err != nil {
		b.storageHealth(fmt.Errorf("probe write in %s: %w", b.opts.StoreDir, err))
		return
	}
	s := "the disk has room again (a probe write succeeded): restart the relay to start JetStream"
	if b.storageErr.Load() == nil || *b.storageErr.Load() != s {
		b.log.Warn("bus: " + s)
	}
	b.storageErr.Store(&s)
}

// storageHealth records a failed recovery, logged when it starts and at
// most every health.DefaultRepeat.
func (b *Bus) storageHealth(err error) {
	s := err.Error()
	b.storageErr.Store(&s)
	if ch, _ := b.storage.Fail(b.opts.Clock.Now(), err); ch != 0 {
		b.log.Warn("bus: the embedded JetStream cannot store; restart the relay once the disk has room", "err", err, "store_dir", b.opts.StoreDir)
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
