package bus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ErrNotConnected is returned by StoredMsgIDs while the connection is down.
var ErrNotConnected = errors.New("bus: not connected to NATS")

// maxStoredScan bounds StoredMsgIDs: a check never reads more of the
// stream than this many messages, nor keeps more ids (about 100 B each
// while it runs); past it, the duplicate window covers the rest.
const maxStoredScan = 100_000

// StoredMsgIDs returns the Nats-Msg-Id of each of the event stream's last n
// messages (at most maxStoredScan) that the relay signed itself: a message
// whose Relay-Mac does not verify is skipped, so nobody who may publish on
// an external NATS can hide an event the relay still has to publish. The
// outbox asks it after a start, and after a publish whose outcome is
// unknown: every event it still holds that is among them was stored, so it
// is not published again, however long ago that was (JetStream's duplicate
// window only covers bus.duplicate_window). It reads through an ephemeral
// consumer, which the relay's NATS user must be allowed to create.
func (b *Bus) StoredMsgIDs(ctx context.Context, n int) (map[string]struct{}, error) {
	n = min(n, maxStoredScan)
	if n <= 0 {
		return nil, nil
	}
	// Disconnected, a request would wait out ctx: say so at once, so the
	// outbox retries on its short backoff instead.
	if st := b.nc.Status(); st != nats.CONNECTED {
		return nil, fmt.Errorf("%w (%s)", ErrNotConnected, st)
	}
	s, err := b.js.Stream(ctx, b.opts.Stream)
	if err != nil {
		return nil, fmt.Errorf("read the stream's state: %w", err)
	}
	st := s.CachedInfo().State
	if st.Msgs == 0 {
		return map[string]struct{}{}, nil
	}
	from := st.FirstSeq
	if st.LastSeq >= uint64(n) && st.LastSeq-uint64(n)+1 > from {
		from = st.LastSeq - uint64(n) + 1
	}
	// A plain ephemeral consumer, not an ordered one: an ordered
	// consumer's Fetch re-creates it on a context of its own and retries
	// forever, so a check could outlive ctx (and hold the outbox) for a
	// whole outage. This one is deleted at the end, or by the server
	// once idle.
	c, err := s.CreateConsumer(ctx, jetstream.ConsumerConfig{
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       from,
		AckPolicy:         jetstream.AckNonePolicy,
		InactiveThreshold: time.Minute,
		MemoryStorage:     true,
	})
	if err != nil {
		return nil, fmt.Errorf("read the stream's last %d messages: %w", n, err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		_ = s.DeleteConsumer(dctx, c.CachedInfo().Name)
		cancel()
	}()
	ids := make(map[string]struct{}, min(n, int(st.LastSeq-from+1)))
	for ctx.Err() == nil {
		// A fetch that waits a second and gets nothing means the
		// stream has no more for us (messages deleted at its end). At
		// most 4 MiB at a time, whatever the events' size.
		batch, err := c.FetchBytes(4<<20, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			return nil, fmt.Errorf("read the stream's last %d messages: %w", n, err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			md, err := m.Metadata()
			if err != nil {
				return nil, err
			}
			id := m.Headers().Get(jetstream.MsgIDHeader)
			if id != "" && b.Verify(b.opts.Stream, md.Sequence.Stream, m.Subject(), m.Headers(), m.Data()) == nil {
				ids[id] = struct{}{}
			}
			if md.Sequence.Stream >= st.LastSeq || md.NumPending == 0 {
				return ids, nil
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && !errors.Is(err, nats.ErrTimeout) {
			return nil, fmt.Errorf("read the stream's last %d messages: %w", n, err)
		}
		if got == 0 {
			if st := b.nc.Status(); st != nats.CONNECTED {
				return nil, fmt.Errorf("%w (%s)", ErrNotConnected, st)
			}
			return ids, ctx.Err()
		}
	}
	return nil, ctx.Err()
}
