// Package outbox moves events from the state store's outbox to JetStream.
//
// Events are read in commit order, published with their Nats-Msg-Id, and
// deleted from the outbox only after JetStream acknowledged them. A crash
// between the acknowledgement and the delete leaves the event in the
// outbox; before its first publish after a start, the publisher looks up
// the ids of the stream's last messages and deletes what the stream holds
// instead of publishing it again (checkStored), so a restart does not lean
// on the duplicate window. Publishes are pipelined (async,
// one batch at a time); when any acknowledgement in a batch fails, only the
// acknowledged prefix is deleted and the rest is retried after a backoff, so
// per-resource order holds unless a single message fails while the ones
// after it succeed (then the retried one lands after them).
//
// One acknowledgement per batch. Once the stream's last message is known
// (from the last acknowledgement of a batch), the next batch goes out with
// no reply subject on all but its last message, which alone asks for an
// acknowledgement. Every message carries Nats-Expected-Last-Msg-Id, the id
// of the message before it (the first: the last one stored), so JetStream
// stores it only right after its predecessor; one not stored (a duplicate,
// a refusal) or another publisher's message in between fails every later
// check, and the last acknowledgement is an error. JetStream handles one
// connection's messages to a stream in order, so a good acknowledgement
// (whose sequence must also be the known one plus the batch's size) proves
// the whole batch is stored. Otherwise, and after any error, the batch is
// published again with an acknowledgement per message, and the duplicate
// window drops what was already stored. It cuts the CPU per published event
// by a quarter (BenchmarkPublishOnce: 27-28 µs with an ack each, 19-23 µs
// with one per batch of 256; BENCHMARKS.md).
package outbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cakework-relay/cakework-relay/internal/backoff"
	"github.com/cakework-relay/cakework-relay/internal/clock"
	"github.com/cakework-relay/cakework-relay/internal/health"
	"github.com/cakework-relay/cakework-relay/internal/state"
)

// Bus is the part of the bus the outbox needs.
type Bus interface {
	PublishAsync(subject, msgID string, data []byte, hdr nats.Header) (jetstream.PubAckFuture, error)
	// PublishNoAck sends with no reply subject, for JetStream to store
	// only if the stream's last message id is expectLast; it answers
	// nothing.
	PublishNoAck(subject, msgID string, data []byte, expectLast string) error
}

// Options configure a Publisher.
type Options struct {
	Store  *state.Store
	Bus    Bus
	Clock  clock.Clock
	Logger *slog.Logger
	// Batch is how many events are in flight at once. Default 1000.
	Batch int
	// AckTimeout bounds the wait for one batch's acks. Default 10s.
	AckTimeout time.Duration
	// Poll is how often the outbox is checked without a notification.
	// Default 1s.
	Poll time.Duration
	// CheckTimeout bounds one look at the stream for events it already
	// holds (checkStored). Default 10s.
	CheckTimeout time.Duration
	Registerer   prometheus.Registerer
}

// Publisher drains the outbox to the bus.
type Publisher struct {
	o         Options
	log       *slog.Logger
	published prometheus.Counter
	failures  prometheus.Counter

	batches *prometheus.CounterVec

	mu      sync.Mutex
	lastErr error
	running sync.Mutex
	// lastSeq and lastMsgID are the stream's last message after the last
	// batch, when known (held under running).
	lastSeq   uint64
	lastMsgID string
	seqKnown  bool
	// started: the check after a start (checkStored) is done. checks
	// are what the checks found on the stream, each kept until every
	// entry it covers was compared with it (held under running).
	started bool
	checks  []storedCheck
	// checkN, when set, is how many of the first entries the next check
	// looks for (the batch whose publish failed), and checkCovers those
	// entries; checkTimeouts counts checks in a row that timed out.
	checkN        int
	checkCovers   state.OutboxMark
	checkTimeouts int
	// checkOff: the check timed out storedCheckTries times in a row (a
	// NATS user that may not create consumers); not tried again in this
	// process, so every reconnect does not cost those timeouts again.
	checkOff bool
	skipped  prometheus.Counter
	// storedIDs is how many ids checks holds (read by a gauge).
	storedIDs atomic.Int64
}

// storedCheck is what one look at the stream found: ids, those of the
// stream's last messages, and covers, the outbox entries it looked for
// (every entry in the outbox after a start; the batch whose publish failed
// after a failure). looked says which of them were compared with ids
// since: the check is dropped once none is left to compare. An entry
// looked at again (after a failed publish or delete) is compared again,
// which finds what it found before and uses nothing up.
type storedCheck struct {
	ids    map[string]struct{}
	covers state.OutboxMark
	looked state.OutboxMark
}

// maxStoredChecks bounds the checks kept at once: the one after a start
// (up to 100,000 ids) and a few after failed publishes (a batch's worth
// each), which one peek usually finishes.
const maxStoredChecks = 8

// StoredIDs is implemented by a Bus that can list the ids of its stream's
// last messages (bus.Bus).
type StoredIDs interface {
	StoredMsgIDs(ctx context.Context, n int) (map[string]struct{}, error)
}

// New builds a Publisher. Metrics are registered on o.Registerer when set.
func New(o Options) *Publisher {
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Batch <= 0 {
		o.Batch = 1000
	}
	if o.AckTimeout <= 0 {
		o.AckTimeout = 10 * time.Second
	}
	if o.Poll <= 0 {
		o.Poll = time.Second
	}
	if o.CheckTimeout <= 0 {
		o.CheckTimeout = storedCheckTimeout
	}
	r := &Publisher{
		o:   o,
		log: o.Logger.With("component", "outbox"),
		published: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "relay_outbox_published_total", Help: "Events published from the outbox to JetStream.",
		}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "relay_outbox_publish_errors_total", Help: "Outbox batches that failed to publish and will be retried.",
		}),
		skipped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "relay_outbox_already_stored_total", Help: "Events found on the stream after a start (stored before a crash, not yet deleted from the outbox) and deleted without being published again.",
		}),
		batches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_outbox_batches_total",
			Help: "Outbox batches published, by how they were acknowledged: one (only the last message), each (every message), or one_then_each (the last ack showed a message missing or another publisher in between, so published again with an ack each).",
		}, []string{"acks"}),
	}
	if o.Registerer != nil {
		o.Registerer.MustRegister(r.published, r.failures, r.batches, r.skipped,
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "relay_outbox_depth", Help: "Events committed and not yet published to JetStream (a published polled event counts until the checkpoint that deletes it, about 100 ms later).",
			}, func() float64 { return float64(o.Store.OutboxDepth()) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "relay_outbox_stored_check_ids", Help: "Ids of the stream's last messages kept to compare with the outbox after a start or a lost ack (until every entry they cover was compared; at most 8 checks, the first up to 100,000 ids).",
			}, func() float64 { return float64(r.storedIDs.Load()) }))
	}
	return r
}

// LastError is the last publish failure, nil after a success.
func (r *Publisher) LastError() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lastErr
}

// JetStream's answers to a message it will not store for lack of room
// (nats-server's JSInsufficientResourcesErr, JSStorageResourcesExceededErr
// and JSStreamStoreFailedF; nats.go has no constants for them).
const (
	errCodeInsufficientResources jetstream.ErrorCode = 10023
	errCodeStorageExceeded       jetstream.ErrorCode = 10047
	errCodeStoreFailed           jetstream.ErrorCode = 10077
)

// ErrStoreRefusing is wrapped by StoreRefusing.
var ErrStoreRefusing = errors.New("JetStream refuses to store events")

// StoreRefusing is the "bus_store" readiness check: an error while the
// last publish was refused for lack of storage (a full disk, or a storage
// limit JetStream sized on a fuller disk), nil otherwise. Events wait in
// the outbox meanwhile; the first publish that is stored clears it.
func (r *Publisher) StoreRefusing() error {
	err := r.LastError()
	var apiErr *jetstream.APIError
	if err == nil || !errors.As(err, &apiErr) {
		return nil
	}
	switch apiErr.ErrorCode {
	case errCodeInsufficientResources, errCodeStorageExceeded, errCodeStoreFailed:
		return fmt.Errorf("%w (%s): is the disk holding the stream full? %d events wait in the outbox; free space and publishing resumes by itself",
			ErrStoreRefusing, apiErr.Description, r.o.Store.OutboxDepth())
	}
	return nil
}

func (r *Publisher) setErr(err error) {
	r.mu.Lock()
	r.lastErr = err
	r.mu.Unlock()
}

// Run publishes until ctx ends. Failures are retried with backoff forever:
// nothing leaves the outbox unacknowledged.
func (r *Publisher) Run(ctx context.Context) {
	// Short: the bus is usually back within a second (a reconnect).
	b := backoff.Backoff{Initial: 100 * time.Millisecond, Max: 5 * time.Second}
	poll := time.NewTicker(r.o.Poll)
	defer poll.Stop()
	// Logged when failing starts, at most every health.DefaultRepeat while
	// it lasts, and when it ends: a bus refusing for an hour is not a line
	// every 5 s.
	var h health.Tracker
	for ctx.Err() == nil {
		n, err := r.PublishOnce(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			wait := b.Next()
			switch ch, st := h.Fail(r.o.Clock.Now(), err); ch {
			case health.Failing:
				r.log.Warn("publish failed; events stay in the outbox", "err", err, "retry_in", wait, "depth", r.o.Store.OutboxDepth())
			case health.StillFailing:
				r.log.Warn("publish still failing; events stay in the outbox", "err", err, "failures", st.Failures,
					"since", st.Since.UTC().Format(time.RFC3339), "depth", r.o.Store.OutboxDepth())
			}
			_ = clock.Sleep(ctx, r.o.Clock, wait)
			continue
		}
		if ch, st := h.OK(r.o.Clock.Now()); ch == health.Recovered {
			r.log.Warn("publishing recovered", "failures", st.Failures, "failing_for", r.o.Clock.Now().Sub(st.Since).Round(time.Second))
		}
		b.Reset()
		if n > 0 {
			continue
		}
		select {
		case <-ctx.Done():
		case <-r.o.Store.OutboxNotify():
		case <-poll.C:
		}
	}
}

// Drain publishes until the outbox is empty or ctx ends.
func (r *Publisher) Drain(ctx context.Context) error {
	for {
		if r.o.Store.OutboxDepth() == 0 {
			return nil
		}
		n, err := r.PublishOnce(ctx)
		if err == nil && n == 0 {
			// What is left was published and waits for the checkpoint that
			// syncs the bus before it is deleted (state.DeleteOutbox).
			if err = r.o.Store.Checkpoint(ctx); err == nil {
				if serr := r.o.Store.BusSyncError(); serr != nil && r.o.Store.OutboxDepth() > 0 {
					return fmt.Errorf("outbox: %d published events wait for the bus to sync its files: %w", r.o.Store.OutboxDepth(), serr)
				}
				continue
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("outbox: %d events left unpublished: %w", r.o.Store.OutboxDepth(), err)
			}
			if err := clock.Sleep(ctx, r.o.Clock, 200*time.Millisecond); err != nil {
				return fmt.Errorf("outbox: %d events left unpublished: %w", r.o.Store.OutboxDepth(), err)
			}
		}
	}
}

// PublishOnce publishes one batch and reports how many events left the
// outbox.
func (r *Publisher) PublishOnce(ctx context.Context) (int, error) {
	// Run and Drain may overlap at shutdown; one batch at a time keeps order.
	r.running.Lock()
	defer r.running.Unlock()
	if !r.started {
		if err := r.checkStored(ctx); err != nil {
			r.failures.Inc()
			r.setErr(err)
			return 0, err
		}
	}
	entries, err := r.o.Store.PeekOutbox(r.o.Batch)
	if err != nil || len(entries) == 0 {
		return 0, err
	}
	var skipped int
	if len(r.checks) > 0 {
		if entries, skipped, err = r.dropStored(ctx, entries); err != nil || len(entries) == 0 {
			return skipped, err
		}
	}
	var acked int
	how := "each"
	if r.seqKnown && len(entries) > 1 {
		how = "one"
		var ok bool
		if ok, err = r.publishOneAck(ctx, entries); err == nil && ok {
			acked = len(entries)
		} else if err == nil {
			how = "one_then_each"
		}
	}
	if how != "one" {
		acked, err = r.publishEach(ctx, entries)
	}
	if err == nil {
		r.batches.WithLabelValues(how).Inc()
	}
	if acked > 0 {
		// Use a fresh context: what JetStream has acknowledged must leave the
		// outbox even when we are shutting down.
		if err := r.o.Store.DeleteOutbox(context.WithoutCancel(ctx), entries[:acked]); err != nil {
			return 0, fmt.Errorf("outbox: delete published entries: %w", err)
		}
		r.published.Add(float64(acked))
	}
	if err != nil {
		r.failures.Inc()
		err = fmt.Errorf("outbox: publish: %w", err)
		r.setErr(err)
		// Some of what was sent may be stored without an ack (a lost
		// ack, a timeout): look on the stream before sending it again.
		r.started, r.checkN = false, len(entries)-acked
		r.checkCovers = state.OutboxMark{}.With(entries[acked:]...)
		return skipped + acked, err
	}
	r.setErr(nil)
	return skipped + acked, nil
}

// checkStored runs before the first publish after a start, and again
// after a publish whose outcome is unknown. What the outbox still holds may
// have been stored already (JetStream acknowledged it just before a crash,
// or stored a batch whose acknowledgement was lost). Those are among the
// stream's last messages (as many as the outbox holds after a start, the
// failed batch after a failure: with one relay publishing, everything after
// them is its own), so their ids are looked up there, and dropStored
// deletes them instead of publishing them again. So neither a restart nor
// a long outage leans on the duplicate window.
//
// A check that fails is retried like a publish (the bus may be down), but
// one that times out storedCheckTries times in a row, or that JetStream
// refuses for good (say, the relay's user may not create consumers on an
// external NATS, which shows as a timeout), is given up with a warning: the
// events are published, and the window drops repeats inside it.
func (r *Publisher) checkStored(ctx context.Context) error {
	n := r.o.Store.OutboxDepth()
	if r.checkN > 0 {
		n = min(n, r.checkN)
	}
	sb, ok := r.o.Bus.(StoredIDs)
	if n == 0 || !ok || r.checkOff {
		r.checked(nil, state.OutboxMark{})
		return nil
	}
	covers := r.checkCovers
	if r.checkN == 0 {
		var err error
		if covers, err = r.o.Store.OutboxEnd(); err != nil {
			return fmt.Errorf("outbox: read the outbox's end: %w", err)
		}
	}
	cctx, cancel := context.WithTimeout(ctx, r.o.CheckTimeout)
	ids, err := sb.StoredMsgIDs(cctx, n)
	cancel()
	if err == nil {
		r.checked(ids, covers)
		return nil
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	var apiErr *jetstream.APIError
	final := errors.As(err, &apiErr) && apiErr.Code != 503 // 503: JetStream not available yet
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) {
		r.checkTimeouts++
		final = r.checkTimeouts >= storedCheckTries
		r.checkOff = final
	}
	if final {
		r.log.Warn("cannot read the stream's last messages to skip events it already holds; publishing them (JetStream drops repeats inside bus.duplicate_window), and not trying again until the relay restarts if it timed out: allow the relay's NATS user to create consumers on the stream",
			"err", err, "events", n)
		r.checked(nil, state.OutboxMark{})
		return nil
	}
	return fmt.Errorf("outbox: read which of %d waiting events the stream already holds: %w", n, err)
}

// checked ends a check: ids are what it found for the entries covers
// covers. Earlier checks are kept: entries they cover may not have been
// compared with them yet (the rest of the outbox after a start, when a
// failed batch is checked again).
func (r *Publisher) checked(ids map[string]struct{}, covers state.OutboxMark) {
	r.started, r.checkN, r.checkCovers, r.checkTimeouts = true, 0, state.OutboxMark{}, 0
	if len(ids) == 0 {
		return
	}
	if len(r.checks) == maxStoredChecks {
		r.log.Warn("too many looks at the stream are waiting to be compared with the outbox; forgetting the oldest (JetStream drops repeats of its events inside bus.duplicate_window)",
			"ids", len(r.checks[0].ids))
		r.checks = slices.Delete(r.checks, 0, 1)
	}
	r.checks = append(r.checks, storedCheck{ids: ids, covers: covers})
	r.countStoredIDs()
}

func (r *Publisher) countStoredIDs() {
	n := 0
	for _, c := range r.checks {
		n += len(c.ids)
	}
	r.storedIDs.Store(int64(n))
}

// onStream reports whether a check found e on the stream.
func (r *Publisher) onStream(e state.OutboxEntry) bool {
	for _, c := range r.checks {
		if _, ok := c.ids[e.MsgID]; ok && c.covers.Covers(e) {
			return true
		}
	}
	return false
}

// storedCheckTimeout bounds one check; storedCheckTries checks in a row
// that time out give it up.
const (
	storedCheckTimeout = 10 * time.Second
	storedCheckTries   = 3
)

// dropStored deletes the entries checkStored found on the stream, and
// returns the others. Then every check has been compared with entries
// (a batch holds, in each of the outbox's queues, the oldest entries
// waiting); a check none of whose entries is left to compare is dropped.
func (r *Publisher) dropStored(ctx context.Context, entries []state.OutboxEntry) ([]state.OutboxEntry, int, error) {
	var stored []state.OutboxEntry
	rest := entries[:0:0]
	for _, e := range entries {
		if r.onStream(e) {
			stored = append(stored, e)
			continue
		}
		rest = append(rest, e)
	}
	if len(stored) > 0 {
		if err := r.o.Store.DeleteOutbox(context.WithoutCancel(ctx), stored); err != nil {
			return nil, 0, fmt.Errorf("outbox: delete events already on the stream: %w", err)
		}
		r.skipped.Add(float64(len(stored)))
		r.log.Info("events stored before the restart were not published again", "count", len(stored))
	}
	for i := range r.checks {
		r.checks[i].looked = r.checks[i].looked.With(entries...)
	}
	r.checks = slices.DeleteFunc(r.checks, func(c storedCheck) bool {
		waits, err := r.o.Store.OutboxWaits(c.looked, c.covers)
		return err == nil && !waits
	})
	r.countStoredIDs()
	if len(stored) == 0 {
		return entries, 0, nil
	}
	return rest, len(stored), nil
}

// errCodeWrongLastMsgID is JetStream's answer to a message whose
// Nats-Expected-Last-Msg-Id is not the stream's last message id
// (JSStreamWrongLastMsgIDErrF; nats.go has no constant for it).
const errCodeWrongLastMsgID jetstream.ErrorCode = 10070

// publishOneAck sends the batch with an acknowledgement for its last
// message only, and reports whether that proves every message was stored.
// Each message expects the one before it (the first, the last message
// stored) to be the stream's last: a message not stored, or another
// publisher's in between, makes every later one of the batch fail the
// check, the last one included, so its ack is an error.
func (r *Publisher) publishOneAck(ctx context.Context, entries []state.OutboxEntry) (bool, error) {
	r.seqKnown = false
	prev := r.lastMsgID
	// An empty id would break the chain (the header means "no check").
	if prev == "" || slices.ContainsFunc(entries, func(e state.OutboxEntry) bool { return e.MsgID == "" }) {
		return false, nil
	}
	last := len(entries) - 1
	for _, e := range entries[:last] {
		if err := r.o.Bus.PublishNoAck(e.Subject, e.MsgID, e.Payload, prev); err != nil {
			return false, err
		}
		prev = e.MsgID
	}
	e := entries[last]
	f, err := r.o.Bus.PublishAsync(e.Subject, e.MsgID, e.Payload, nats.Header{jetstream.ExpectedLastMsgIDHeader: []string{prev}})
	if err != nil {
		return false, err
	}
	ack, err := r.waitAck(ctx, f)
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode == errCodeWrongLastMsgID {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	// The chain held; the sequence is checked as well.
	if ack.Duplicate || ack.Sequence != r.lastSeq+uint64(len(entries)) {
		return false, nil
	}
	r.lastSeq, r.lastMsgID, r.seqKnown = ack.Sequence, e.MsgID, true
	return true, nil
}

// publishEach sends the batch with an acknowledgement per message and
// returns how many, from the first, were acknowledged.
func (r *Publisher) publishEach(ctx context.Context, entries []state.OutboxEntry) (int, error) {
	r.seqKnown = false
	futures := make([]jetstream.PubAckFuture, 0, len(entries))
	var sendErr error
	for _, e := range entries {
		f, err := r.o.Bus.PublishAsync(e.Subject, e.MsgID, e.Payload, nil)
		if err != nil {
			sendErr = err
			break
		}
		futures = append(futures, f)
	}
	acked := 0
	var ack *jetstream.PubAck
	var ackID string
	var ackErr error
	timeout := r.o.Clock.After(r.o.AckTimeout)
wait:
	for _, f := range futures {
		select {
		case a := <-f.Ok():
			ack, ackID = a, entries[acked].MsgID
			acked++
		case err := <-f.Err():
			ackErr = err
			break wait
		case <-timeout:
			ackErr = errors.New("timed out waiting for JetStream acknowledgements")
			break wait
		case <-ctx.Done():
			ackErr = ctx.Err()
			break wait
		}
	}
	if err := errors.Join(sendErr, ackErr); err != nil {
		return acked, err
	}
	// A duplicate's acknowledgement carries the original's sequence, not
	// the stream's last.
	if ack != nil && !ack.Duplicate {
		r.lastSeq, r.lastMsgID, r.seqKnown = ack.Sequence, ackID, true
	}
	return acked, nil
}

func (r *Publisher) waitAck(ctx context.Context, f jetstream.PubAckFuture) (*jetstream.PubAck, error) {
	select {
	case a := <-f.Ok():
		return a, nil
	case err := <-f.Err():
		return nil, err
	case <-r.o.Clock.After(r.o.AckTimeout):
		return nil, errors.New("timed out waiting for a JetStream acknowledgement")
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
