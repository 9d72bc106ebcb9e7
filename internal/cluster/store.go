package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cakework-relay/cakework-relay/internal/autostop"
	"github.com/cakework-relay/cakework-relay/internal/clock"
	"github.com/cakework-relay/cakework-relay/internal/event"
	"github.com/cakework-relay/cakework-relay/internal/poller"
	"github.com/cakework-relay/cakework-relay/internal/state"
)

// HdrCursor carries, on the last log event of a stream in one commit, the
// log cursor that accounts for it. The stream is then the record of where
// each log stream was left off: a leader that died after publishing and
// before writing the cursor to the bucket is continued from the event.
const HdrCursor = "Relay-Cursor"

// Key prefixes in the fleet bucket.
const (
	pfxResource = "p.res."   // p.res.<kind>.<id>
	pfxCursor   = "p.cur."   // p.cur.<kind>.<id>: cursorRecord
	pfxWatch    = "p.watch." // p.watch.<kind>.<id>
	pfxMeta     = "p.meta."  // p.meta.<key>
	pfxSink     = "s."       // s.<sink>.<key>: auto-stop's records
	// pfxQueued is where any member queues a build to watch (ingest saw
	// it); the leader folds these into the watch list.
	pfxQueued = "in.watch." // in.watch.<kind>.<id>
)

// ErrNotLeader is returned by a commit of a member whose term ended (the
// lease ran out, or a later leader fenced it). Nothing of the commit was
// accepted after the end of the term.
var ErrNotLeader = errors.New("cluster: this member no longer leads; the commit was refused")

// cursorRecord is a log cursor in the bucket, with the stream sequence of
// the last log event it accounts for.
type cursorRecord struct {
	Seq    uint64          `json:"seq"`
	Cursor json.RawMessage `json:"cursor"`
}

// StoreOptions configure a Store.
type StoreOptions struct {
	JS jetstream.JetStream
	// KV is the fleet bucket; it may be given later (Attach).
	KV            jetstream.KeyValue
	Stream        string // bus.stream
	SubjectPrefix string
	Logger        *slog.Logger
	// Sign adds the relay's MAC to an event before it is published (the
	// sinks deliver only what the relay signed). The relay passes
	// bus.Bus.Sign; nil publishes unsigned (tests of the store alone).
	Sign func(*nats.Msg)
	// Clock stamps the watches folded in from the queue. Default: the
	// wall clock.
	Clock clock.Clock
	// Leading says whether term t is still this member's; every commit
	// asks it first.
	Leading func(t Term) bool
	// Resign is called when a commit of term t fails part way: what was
	// published and what was written are then uncertain, and a new term
	// reloads.
	Resign func(t Term)
	// Announced reports whether a change with this event id was announced
	// by webhook at any member (the fleet's seen bucket), so the poller
	// does not announce it again once past the duplicate window. Nil, or
	// an error reading it: not announced, and the window drops repeats.
	// It is called under the commit lock with the Update's context (a
	// View's: context.Background()), so it must stop waiting when that
	// context ends: a cancelled or deadline-bound commit does not wait
	// for a slow read.
	Announced func(ctx context.Context, eventID string) bool
}

// Store is the leader's knowledge in the fleet bucket: the poller's
// records (builds, VMs, cursors, watches, the baseline) and auto-stop's.
// It implements poller.Store and autostop.Store. It is read into memory
// when a term begins (Begin) and written through: each commit publishes
// its events, then writes its records, each conditional on this term's
// fences. See the package doc for why that is exactly once.
type Store struct {
	o      StoreOptions
	log    *slog.Logger
	bucket string

	commitMu sync.Mutex // one commit at a time: fenced writes are sequential
	mu       sync.RWMutex
	term     Term
	active   bool
	cache    map[string][]byte
}

// NewStore returns a Store with nothing loaded: it refuses every
// transaction until Begin.
func NewStore(o StoreOptions) *Store {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.Sign == nil {
		o.Sign = func(*nats.Msg) {}
	}
	return &Store{o: o, log: o.Logger.With("component", "cluster"), bucket: Bucket(o.Stream), cache: map[string][]byte{}}
}

// Attach gives the store its bucket, once it exists (NATS may be away when
// the relay starts). Call it before the first Begin.
func (s *Store) Attach(kv jetstream.KeyValue) {
	s.mu.Lock()
	s.o.KV = kv
	s.mu.Unlock()
}

func (s *Store) kv() jetstream.KeyValue {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.o.KV
}

var (
	_ poller.Store = (*Store)(nil)
	_ poller.Tx    = (*tx)(nil)
)

// Begin loads the knowledge for term t: every record of the bucket, read
// after t's fences were written (nothing of an earlier leader can land
// after it), and every log cursor reconciled with the last log event on
// the stream.
func (s *Store) Begin(ctx context.Context, t Term) error {
	cache := map[string][]byte{}
	// The watch's consumer may sit on a replica that lags the quorum: the
	// read is complete once it has shown this term's own fence write (the
	// "term" key at KVFence), which came after everything an earlier
	// leader wrote.
	w, err := s.kv().WatchFiltered(ctx, []string{"p.>", "s.>", termKey}, jetstream.IgnoreDeletes())
	if err != nil {
		return fmt.Errorf("cluster: read the fleet bucket: %w", err)
	}
	defer w.Stop()
	initial, fenced := false, false
	for !initial || !fenced {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("cluster: the fleet bucket's watch ended before its initial values")
			}
			switch {
			case e == nil:
				initial = true
			case e.Key() == termKey:
				fenced = e.Revision() >= t.KVFence
			case e.Operation() != jetstream.KeyValuePut:
				delete(cache, e.Key())
			default:
				cache[e.Key()] = e.Value()
			}
		}
	}
	st, err := s.o.JS.Stream(ctx, s.o.Stream)
	if err != nil {
		return fmt.Errorf("cluster: open stream %s: %w", s.o.Stream, err)
	}
	reconciled := 0
	for k, raw := range cache {
		if !strings.HasPrefix(k, pfxCursor) {
			continue
		}
		kind, id, ok := strings.Cut(strings.TrimPrefix(k, pfxCursor), ".")
		if !ok {
			continue
		}
		var rec cursorRecord
		if json.Unmarshal(raw, &rec) != nil {
			continue
		}
		m, err := st.GetLastMsgForSubject(ctx, logSubject(s.o.SubjectPrefix, kind, id))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("cluster: reconcile the %s %s log cursor: %w", kind, id, err)
		}
		if c := m.Header.Get(HdrCursor); c != "" && m.Sequence > rec.Seq {
			nr, _ := json.Marshal(cursorRecord{Seq: m.Sequence, Cursor: json.RawMessage(c)})
			cache[k] = nr
			reconciled++
		}
	}
	s.mu.Lock()
	s.cache, s.term, s.active = cache, t, true
	s.mu.Unlock()
	s.log.Info("cluster: knowledge loaded for this term", "term", t.N, "records", len(cache), "cursors_taken_from_the_stream", reconciled)
	return nil
}

// End refuses every transaction from now on (until the next Begin).
func (s *Store) End() {
	s.mu.Lock()
	s.active = false
	s.mu.Unlock()
}

func logSubject(prefix, kind, id string) string { return prefix + "." + kind + "." + id + ".log" }

// ErrStandby is what a standby answers for the leader's knowledge.
var ErrStandby = errors.New("this fleet member is a standby: the leader (cluster.leader in /v1/status) polls and keeps this")

// View runs fn on the knowledge as of the last commit.
func (s *Store) View(fn func(poller.Tx) error) error {
	s.mu.RLock()
	active := s.active
	s.mu.RUnlock()
	if !active {
		return ErrStandby
	}
	return fn(&tx{s: s, ctx: context.Background()})
}

// Update runs fn on a transaction and commits it: its events are
// published (each conditional on this term's stream fence, with its event
// id as Nats-Msg-Id), then its records written (each conditional on the
// bucket's fence). A commit that fails part way resigns the term.
func (s *Store) Update(ctx context.Context, fn func(poller.Tx) error) error {
	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	s.mu.RLock()
	active, term := s.active, s.term
	s.mu.RUnlock()
	if !active || !s.o.Leading(term) {
		return ErrNotLeader
	}
	t := &tx{s: s, ctx: ctx, writes: map[string][]byte{}}
	if err := fn(t); err != nil {
		return err
	}
	if err := s.commit(ctx, term, t); err != nil {
		switch {
		case errors.Is(err, errCursorTaken):
			// Not uncertain: the bucket has the cursor of what is on the
			// stream, and the poller reads on from it next pass.
			return err
		case errors.Is(err, ErrNotLeader):
			s.End()
		case ctx.Err() != nil:
			// The term (or the relay) is ending: nothing to resign.
			return err
		}
		s.log.Warn("cluster: a commit failed part way; giving up the term so the next one reloads", "err", err)
		s.o.Resign(term)
		return err
	}
	s.mu.Lock()
	for _, k := range t.order {
		if v := t.writes[k]; v == nil {
			delete(s.cache, k)
		} else {
			s.cache[k] = v
		}
	}
	s.mu.Unlock()
	return nil
}

func (s *Store) commit(ctx context.Context, term Term, t *tx) error {
	if !s.o.Leading(term) {
		return ErrNotLeader
	}
	// The last log event of each stream carries the stream's cursor.
	lastLog := map[string]int{}
	for i, m := range t.events {
		if strings.HasSuffix(m.subject, ".log") {
			lastLog[m.subject] = i
		}
	}
	cursorOf := map[string]string{} // log subject -> cursor key
	for _, k := range t.order {
		if kind, id, ok := strings.Cut(strings.TrimPrefix(k, pfxCursor), "."); ok && strings.HasPrefix(k, pfxCursor) && t.writes[k] != nil {
			cursorOf[logSubject(s.o.SubjectPrefix, kind, id)] = k
		}
	}
	fence := jetstream.WithExpectLastSequenceForSubject(term.StreamFence, FenceSubject(s.o.Stream))
	for i, m := range t.events {
		msg := &nats.Msg{Subject: m.subject, Data: m.payload, Header: nats.Header{}}
		msg.Header.Set(nats.MsgIdHdr, m.msgID)
		ck, hasCursor := cursorOf[m.subject]
		carries := hasCursor && lastLog[m.subject] == i // the stream's cursor rides on it
		var rec cursorRecord
		if carries {
			_ = json.Unmarshal(t.writes[ck], &rec)
			msg.Header.Set(HdrCursor, string(rec.Cursor))
		}
		s.o.Sign(msg)
		ack, err := s.o.JS.PublishMsg(ctx, msg, fence)
		if err != nil {
			return fenceErr(fmt.Errorf("publish %s: %w", m.subject, err))
		}
		if hasCursor && ack.Duplicate {
			// A log event with this id is on the stream already: a commit
			// that published it died before its cursor reached the bucket.
			// It may hold fewer lines than this one (JetStream kept it and
			// dropped this); the stream's last log event says where the
			// stream was left off.
			if err := s.takeCursor(ctx, term, ck, m.subject, ack.Sequence, m.payload); err != nil {
				return err
			}
		}
		if carries {
			rec.Seq = ack.Sequence
			t.writes[ck], _ = json.Marshal(rec)
		}
	}
	kvFence := jetstream.WithExpectLastSequenceForSubject(term.KVFence, "$KV."+s.bucket+"."+termKey)
	for _, k := range t.order {
		msg := &nats.Msg{Subject: "$KV." + s.bucket + "." + k, Header: nats.Header{}}
		if v := t.writes[k]; v == nil {
			msg.Header.Set("KV-Operation", "DEL")
		} else {
			msg.Data = v
		}
		if _, err := s.o.JS.PublishMsg(ctx, msg, kvFence); err != nil {
			return fenceErr(fmt.Errorf("write %s: %w", k, err))
		}
	}
	return nil
}

// errCursorTaken ends a commit whose log event was already on the stream
// with a different cursor: the bucket now has that one, and the rest of
// the commit is dropped (the poller reads on from there next pass).
var errCursorTaken = errors.New("cluster: the log event was on the stream already; its cursor was taken, the rest is read again")

// takeCursor handles a log event JetStream dropped as a repeat of the one
// at seq. The same lines: nothing to do. Other lines: the cursor of the
// stream's last log event is written as the record of key k, and the
// commit stops (errCursorTaken); the poller reads on from there. With no
// cursor on that event (its commit died between two events), the commit
// fails as uncertain, and the term is given up.
func (s *Store) takeCursor(ctx context.Context, term Term, k, subject string, seq uint64, mine []byte) error {
	st, err := s.o.JS.Stream(ctx, s.o.Stream)
	if err != nil {
		return fmt.Errorf("read the log event at %d: %w", seq, err)
	}
	orig, err := st.GetMsg(ctx, seq)
	if err != nil {
		return fmt.Errorf("read the log event at %d: %w", seq, err)
	}
	if bytes.Equal(orig.Data, mine) {
		return nil
	}
	last, err := st.GetLastMsgForSubject(ctx, subject)
	if err != nil {
		return fmt.Errorf("read the last log event of %s: %w", subject, err)
	}
	c := last.Header.Get(HdrCursor)
	if c == "" {
		return fmt.Errorf("the last log event of %s carries no cursor (its commit died part way)", subject)
	}
	raw, _ := json.Marshal(cursorRecord{Seq: last.Sequence, Cursor: json.RawMessage(c)})
	msg := &nats.Msg{Subject: "$KV." + s.bucket + "." + k, Data: raw}
	if _, err := s.o.JS.PublishMsg(ctx, msg, jetstream.WithExpectLastSequenceForSubject(term.KVFence, "$KV."+s.bucket+"."+termKey)); err != nil {
		return fenceErr(fmt.Errorf("write %s: %w", k, err))
	}
	s.mu.Lock()
	s.cache[k] = raw
	s.mu.Unlock()
	s.log.Info("cluster: a log event was on the stream already with other lines (a commit that died before its cursor); continuing from the stream's cursor", "key", k, "seq", last.Sequence)
	return fmt.Errorf("%s: %w", k, errCursorTaken)
}

// fenceErr marks a refusal by a fence as ErrNotLeader.
func fenceErr(err error) error {
	var ae *jetstream.APIError
	if errors.As(err, &ae) && (ae.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || ae.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
		return fmt.Errorf("%w: %w", ErrNotLeader, err)
	}
	return err
}

// ApplyWatchQueue folds the builds any member queued (QueueWatch) into the
// watch list, build watches capped at maxBuilds (0: no cap; the ones past
// it are dropped from the queue and counted in refused).
func (s *Store) ApplyWatchQueue(ctx context.Context, maxBuilds int) (added, refused int, err error) {
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	keys, err := s.kv().ListKeysFiltered(rctx, pfxQueued+">")
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, fmt.Errorf("cluster: list queued watches: %w", err)
	}
	var queued []string
	for k := range keys.Keys() {
		queued = append(queued, k)
		if len(queued) == 5000 {
			break // the rest next time: one commit stays bounded
		}
	}
	if len(queued) == 0 {
		return 0, 0, nil
	}
	err = s.Update(ctx, func(ptx poller.Tx) error {
		t := ptx.(*tx)
		added, refused = 0, 0
		builds := -1
		for _, k := range queued {
			t.del(k)
			kind, id, ok := strings.Cut(strings.TrimPrefix(k, pfxQueued), ".")
			if !ok {
				continue
			}
			if _, have, err := t.GetWatch(kind, id); err != nil || have {
				continue
			}
			if kind == state.KindBuild && maxBuilds > 0 {
				if builds < 0 {
					builds, _ = t.WatchCount(state.KindBuild)
				}
				if builds >= maxBuilds {
					refused++
					continue
				}
				builds++
			}
			if err := t.PutWatch(kind, id, state.Watch{Source: "webhook", AddedAt: t.s.o.Clock.Now().UTC()}); err != nil {
				return err
			}
			added++
		}
		return nil
	})
	return added, refused, err
}

// QueueWatch asks the leader to watch a build: any member may call it
// (ingest does for every build a webhook names).
func QueueWatch(ctx context.Context, kv jetstream.KeyValue, kind, id string) error {
	_, err := kv.Put(ctx, pfxQueued+kind+"."+id, []byte("{}"))
	return err
}

// tx is a transaction on the Store: reads see the cache with this
// transaction's own writes; writes and events wait for the commit.
type tx struct {
	s      *Store
	ctx    context.Context   // the Update's (a View's: Background); for Announced
	writes map[string][]byte // nil value: deleted
	order  []string
	events []pending
}

type pending struct {
	subject, msgID string
	payload        []byte
}

func (t *tx) get(k string) []byte {
	if t.writes != nil {
		if v, ok := t.writes[k]; ok {
			return v
		}
	}
	t.s.mu.RLock()
	defer t.s.mu.RUnlock()
	return t.s.cache[k]
}

func (t *tx) put(k string, v []byte) error {
	if t.writes == nil {
		return errors.New("cluster: write in a read-only transaction")
	}
	if _, ok := t.writes[k]; !ok {
		t.order = append(t.order, k)
	}
	t.writes[k] = v
	return nil
}

func (t *tx) del(k string) {
	if t.writes == nil {
		return
	}
	if _, ok := t.writes[k]; !ok {
		t.order = append(t.order, k)
	}
	t.writes[k] = nil
}

func (t *tx) getJSON(k string, v any) (bool, error) {
	raw := t.get(k)
	if raw == nil {
		return false, nil
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return true, fmt.Errorf("fleet record %s: %w", k, err)
	}
	return true, nil
}

func (t *tx) putJSON(k string, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return t.put(k, raw)
}

// each calls fn for every key under prefix, in key order, with what this
// transaction sees.
func (t *tx) each(prefix string, fn func(rest string, raw []byte) error) error {
	t.s.mu.RLock()
	keys := make([]string, 0)
	for k := range t.s.cache {
		if strings.HasPrefix(k, prefix) {
			keys = append(keys, k)
		}
	}
	for k, v := range t.writes {
		if strings.HasPrefix(k, prefix) && v != nil {
			if _, dup := t.s.cache[k]; !dup {
				keys = append(keys, k)
			}
		}
	}
	t.s.mu.RUnlock()
	sort.Strings(keys)
	for _, k := range keys {
		raw := t.get(k)
		if raw == nil {
			continue
		}
		if err := fn(k[len(prefix):], raw); err != nil {
			return err
		}
	}
	return nil
}

func rk(pfx, kind, id string) string { return pfx + kind + "." + id }

func (t *tx) GetResource(kind, id string, v any) (bool, error) {
	return t.getJSON(rk(pfxResource, kind, id), v)
}
func (t *tx) PutResource(kind, id string, v any) error {
	return t.putJSON(rk(pfxResource, kind, id), v)
}
func (t *tx) DeleteResource(kind, id string) error {
	t.del(rk(pfxResource, kind, id))
	return nil
}
func (t *tx) ForEachResource(kind string, fn func(id string, raw []byte) error) error {
	return t.each(pfxResource+kind+".", fn)
}

func (t *tx) GetBuild(id string) (state.BuildState, bool, error) {
	var b state.BuildState
	ok, err := t.GetResource(state.KindBuild, id, &b)
	return b, ok, err
}
func (t *tx) PutBuild(id string, b state.BuildState) error {
	return t.PutResource(state.KindBuild, id, b)
}

func (t *tx) GetCursor(kind, id string, v any) (bool, error) {
	var rec cursorRecord
	ok, err := t.getJSON(rk(pfxCursor, kind, id), &rec)
	if !ok || err != nil {
		return ok, err
	}
	if err := json.Unmarshal(rec.Cursor, v); err != nil {
		return true, fmt.Errorf("fleet cursor %s/%s: %w", kind, id, err)
	}
	return true, nil
}
func (t *tx) PutCursor(kind, id string, v any) error {
	k := rk(pfxCursor, kind, id)
	var rec cursorRecord
	if _, err := t.getJSON(k, &rec); err != nil {
		rec = cursorRecord{}
	}
	c, err := json.Marshal(v)
	if err != nil {
		return err
	}
	rec.Cursor = c
	return t.putJSON(k, rec)
}
func (t *tx) DeleteCursor(kind, id string) error {
	t.del(rk(pfxCursor, kind, id))
	return nil
}
func (t *tx) ForEachCursor(kind string, fn func(id string, raw []byte) error) error {
	return t.each(pfxCursor+kind+".", func(id string, raw []byte) error {
		var rec cursorRecord
		if err := json.Unmarshal(raw, &rec); err != nil {
			return fmt.Errorf("fleet cursor %s/%s: %w", kind, id, err)
		}
		return fn(id, rec.Cursor)
	})
}

func (t *tx) Watches(kind string) (map[string]state.Watch, error) {
	out := map[string]state.Watch{}
	err := t.each(pfxWatch+kind+".", func(id string, raw []byte) error {
		var w state.Watch
		if err := json.Unmarshal(raw, &w); err != nil {
			return fmt.Errorf("fleet watch %s/%s: %w", kind, id, err)
		}
		out[id] = w
		return nil
	})
	return out, err
}

var errPageFull = errors.New("page full")

func (t *tx) WatchesPage(kind, after string, limit int) ([]state.WatchEntry, error) {
	var out []state.WatchEntry
	err := t.each(pfxWatch+kind+".", func(id string, raw []byte) error {
		if id <= after && after != "" {
			return nil
		}
		if len(out) == limit {
			return errPageFull
		}
		e := state.WatchEntry{ID: id}
		if err := json.Unmarshal(raw, &e.Watch); err != nil {
			return fmt.Errorf("fleet watch %s/%s: %w", kind, id, err)
		}
		out = append(out, e)
		return nil
	})
	if errors.Is(err, errPageFull) {
		err = nil
	}
	return out, err
}

func (t *tx) WatchCount(kind string) (int, error) {
	n := 0
	err := t.each(pfxWatch+kind+".", func(string, []byte) error { n++; return nil })
	return n, err
}

func (t *tx) GetWatch(kind, id string) (state.Watch, bool, error) {
	var w state.Watch
	ok, err := t.getJSON(rk(pfxWatch, kind, id), &w)
	return w, ok, err
}
func (t *tx) PutWatch(kind, id string, w state.Watch) error {
	return t.putJSON(rk(pfxWatch, kind, id), w)
}
func (t *tx) DeleteWatch(kind, id string) (bool, error) {
	k := rk(pfxWatch, kind, id)
	if t.get(k) == nil {
		return false, nil
	}
	t.del(k)
	return true, nil
}

func (t *tx) GetMeta(k string, v any) (bool, error) { return t.getJSON(pfxMeta+k, v) }
func (t *tx) PutMeta(k string, v any) error         { return t.putJSON(pfxMeta+k, v) }

// ChangeAnnounced asks the fleet's seen bucket (StoreOptions.Announced),
// where every member's ingest marks the changes it announced. Without it,
// the poller's event for the same change carries the same id, and
// JetStream drops the repeat inside bus.duplicate_window. The read runs
// under the Update's context.
func (t *tx) ChangeAnnounced(eventID string, _ time.Time) bool {
	if t.s.o.Announced == nil {
		return false
	}
	ctx := t.ctx
	if ctx == nil {
		ctx = context.Background()
	}
	return t.s.o.Announced(ctx, eventID)
}

func (t *tx) Enqueue(subject, msgID string, payload []byte) error {
	if t.writes == nil {
		return errors.New("cluster: enqueue in a read-only transaction")
	}
	t.events = append(t.events, pending{subject: subject, msgID: msgID, payload: payload})
	return nil
}

// Auto-stop's records and events.

func (t *tx) GetSink(sink, k string, v any) (bool, error) { return t.getJSON(pfxSink+sink+"."+k, v) }
func (t *tx) PutSink(sink, k string, v any) error         { return t.putJSON(pfxSink+sink+"."+k, v) }
func (t *tx) DeleteSink(sink, k string) error {
	t.del(pfxSink + sink + "." + k)
	return nil
}
func (t *tx) ForEachSink(sink string, fn func(k string, raw []byte) error) error {
	return t.each(pfxSink+sink+".", fn)
}
func (t *tx) EnqueueEvent(prefix string, e event.Event) error {
	payload, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("encode event %s: %w", e.ID, err)
	}
	return t.Enqueue(e.NATSSubject(prefix), e.ID, payload)
}

// Autostop is the store as auto-stop's Store.
func (s *Store) Autostop() autostop.Store { return autostopStore{s} }

type autostopStore struct{ s *Store }

func (a autostopStore) View(fn func(autostop.Tx) error) error {
	return a.s.View(func(t poller.Tx) error { return fn(t.(*tx)) })
}

func (a autostopStore) Update(ctx context.Context, fn func(autostop.Tx) error) error {
	return a.s.Update(ctx, func(t poller.Tx) error { return fn(t.(*tx)) })
}

// StillLeading is checked by auto-stop right before a stop call, which no
// fence can cover: it is ErrNotLeader once this member's term ended.
func (a autostopStore) StillLeading() error {
	a.s.mu.RLock()
	active, term := a.s.active, a.s.term
	a.s.mu.RUnlock()
	if !active || !a.s.o.Leading(term) {
		return ErrNotLeader
	}
	return nil
}
