package bus

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// incidentTTL is how long /readyz reports that a stream or a consumer was
// found missing and re-created.
const incidentTTL = time.Hour

// maxIncidents bounds the incidents kept (the newest win).
const maxIncidents = 8

type incident struct {
	at  time.Time
	msg string
}

type incidents struct {
	mu   sync.Mutex
	list []incident
}

func (b *Bus) incident(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	b.log.Error("bus: " + msg)
	b.inc.mu.Lock()
	defer b.inc.mu.Unlock()
	b.inc.list = append(b.inc.list, incident{at: b.opts.Clock.Now(), msg: msg})
	if len(b.inc.list) > maxIncidents {
		b.inc.list = b.inc.list[len(b.inc.list)-maxIncidents:]
	}
}

// Incidents reports the streams and sinks' consumers found missing (and
// re-created) in the last hour: a degraded check for /readyz.
func (b *Bus) Incidents() error {
	now := b.opts.Clock.Now()
	b.inc.mu.Lock()
	defer b.inc.mu.Unlock()
	var msgs []string
	for _, in := range b.inc.list {
		if now.Sub(in.at) < incidentTTL {
			msgs = append(msgs, in.msg+" at "+in.at.UTC().Format(time.RFC3339))
		}
	}
	if len(msgs) == 0 {
		return nil
	}
	return errors.New(strings.Join(msgs, "; "))
}

// watchStreams checks every interval that the streams still exist, and
// re-creates a missing one (someone with rights on an external NATS
// deleted it). Ready fails while one is missing.
func (b *Bus) watchStreams(interval time.Duration) {
	defer close(b.watchDone)
	for {
		select {
		case <-b.stopEnsure:
			return
		case <-b.opts.Clock.After(interval):
		}
		if !b.streamsReady.Load() {
			continue // ensureLoop has not created them yet
		}
		b.CheckStreams(context.Background())
	}
}

// CheckStreams re-creates a stream that is missing, and says so on
// /readyz (Ready while it is missing, Incidents for an hour after).
func (b *Bus) CheckStreams(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	for _, name := range []string{b.opts.Stream, b.DLQStream()} {
		_, err := b.js.Stream(ctx, name)
		if !errors.Is(err, jetstream.ErrStreamNotFound) {
			continue
		}
		b.streamsReady.Store(false)
		b.setStreamErr(fmt.Errorf("bus: stream %s is missing (deleted on the NATS server); re-creating it", name))
		if err := b.ensureStreams(ctx); err != nil {
			b.setStreamErr(err)
			return
		}
		b.incident("stream %s was missing (deleted on the NATS server) and was re-created; what it held is lost", name)
	}
}
