package cluster_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cakework-relay/cakework-relay/internal/cluster"
	"github.com/cakework-relay/cakework-relay/internal/cluster/clustertest"
	"github.com/cakework-relay/cakework-relay/internal/poller"
	"github.com/cakework-relay/cakework-relay/internal/state"
)

const (
	stream = "CAKEWORK"
	prefix = "cakework"
	ttl    = time.Second
)

// member is one relay's side of the election, on its own connection.
type member struct {
	name  string
	nc    *nats.Conn
	js    jetstream.JetStream
	kv    jetstream.KeyValue
	e     *cluster.Elector
	store *cluster.Store
	terms chan cluster.Term
	stop  context.CancelFunc
	done  chan struct{}
}

func setup(t *testing.T) *clustertest.Cluster {
	t.Helper()
	c := clustertest.Start(t, 3)
	_, js := c.Connect(0)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// Until every peer has joined, placement of an R3 stream fails.
	for {
		_, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
			Name: stream, Subjects: []string{prefix + ".>", cluster.FenceSubject(stream)},
			Replicas: 3, Duplicates: time.Minute, Storage: jetstream.FileStorage,
		})
		if err == nil {
			_, err = cluster.OpenBucket(ctx, js, cluster.BucketOptions{Name: cluster.Bucket(stream), Replicas: 3})
		}
		if err == nil {
			return c
		}
		if ctx.Err() != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func join(t *testing.T, c *clustertest.Cluster, node int, name string) *member {
	t.Helper()
	nc, js := c.Connect(node)
	kv, err := js.KeyValue(context.Background(), cluster.Bucket(stream))
	if err != nil {
		t.Fatal(err)
	}
	m := &member{name: name, nc: nc, js: js, kv: kv, terms: make(chan cluster.Term, 4), done: make(chan struct{})}
	m.store = cluster.NewStore(cluster.StoreOptions{JS: js, KV: kv, Stream: stream, SubjectPrefix: prefix,
		Leading: func(tm cluster.Term) bool { return m.e.Leading(tm) }, Resign: func(cluster.Term) {}})
	m.e, err = cluster.NewElector(cluster.ElectorOptions{JS: js, KV: kv, Stream: stream, Member: name, LeaseTTL: ttl,
		Lead: func(ctx context.Context, tm cluster.Term) {
			m.terms <- tm
			<-ctx.Done()
		}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m.stop = cancel
	go func() { defer close(m.done); m.e.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-m.done })
	return m
}

// leaderOf waits for one of ms to lead and returns it with its term.
func leaderOf(t *testing.T, within time.Duration, ms ...*member) (*member, cluster.Term) {
	t.Helper()
	cases := time.After(within)
	for {
		for _, m := range ms {
			select {
			case tm := <-m.terms:
				return m, tm
			default:
			}
		}
		select {
		case <-cases:
			t.Fatalf("no member led within %s", within)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

type cur struct {
	N int `json:"n"`
}

func commitLog(ctx context.Context, s *cluster.Store, id string, n int) error {
	return s.Update(ctx, func(tx poller.Tx) error {
		if err := tx.PutCursor(state.KindVM, id, cur{N: n}); err != nil {
			return err
		}
		return tx.Enqueue(prefix+".vm."+id+".log", "log-"+id+"-"+string(rune('a'+n)), []byte(`{}`))
	})
}

func countSubject(t *testing.T, js jetstream.JetStream, subj string) int {
	t.Helper()
	st, err := js.Stream(context.Background(), stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(context.Background(), jetstream.WithSubjectFilter(subj))
	if err != nil {
		t.Fatal(err)
	}
	return int(info.State.Subjects[subj])
}

// A leader that stops renewing is replaced within 2x the lease TTL, and
// what it sends after the new leader fenced it is refused: it publishes
// nothing and writes nothing, even though it still believes it leads
// (a process frozen between its lease check and its publish).
func TestFailoverFencesTheOldLeader(t *testing.T) {
	c := setup(t)
	a := join(t, c, 0, "a")
	b := join(t, c, 1, "b")
	first, t1 := leaderOf(t, 5*ttl, a, b)
	second := b
	if first == b {
		second = a
	}
	ctx := context.Background()
	if err := first.store.Begin(ctx, t1); err != nil {
		t.Fatal(err)
	}
	if err := commitLog(ctx, first.store, "vm1", 1); err != nil {
		t.Fatal(err)
	}

	// The stale leader's own view: it passed its lease check (always true
	// here) on a connection of its own, then froze.
	_, staleJS := c.Connect(2)
	staleKV, _ := staleJS.KeyValue(ctx, cluster.Bucket(stream))
	stale := cluster.NewStore(cluster.StoreOptions{JS: staleJS, KV: staleKV, Stream: stream, SubjectPrefix: prefix,
		Leading: func(cluster.Term) bool { return true }, Resign: func(cluster.Term) {}})
	if err := stale.Begin(ctx, t1); err != nil {
		t.Fatal(err)
	}

	// The leader goes silent: its connection closes without releasing.
	killed := time.Now()
	first.nc.Close()
	next, t2 := leaderOf(t, 3*ttl, second)
	if took := time.Since(killed); took > 2*ttl+ttl/2 {
		t.Errorf("the standby took %s to lead; want within 2x lease_ttl (%s)", took, 2*ttl)
	}
	if t2.N <= t1.N {
		t.Fatalf("new term %d is not after %d", t2.N, t1.N)
	}
	if err := next.store.Begin(ctx, t2); err != nil {
		t.Fatal(err)
	}

	before := countSubject(t, next.js, prefix+".vm.vm1.log")
	err := commitLog(ctx, stale, "vm1", 7)
	if !errors.Is(err, cluster.ErrNotLeader) {
		t.Fatalf("a commit of the fenced term: got %v, want ErrNotLeader", err)
	}
	if after := countSubject(t, next.js, prefix+".vm.vm1.log"); after != before {
		t.Errorf("the fenced leader published: %d log events, want %d", after, before)
	}
	// Nor did it write its cursor: the new leader's view is the one the
	// old leader committed before it was fenced.
	got, _ := cursorIn(t, next.store, state.KindVM, "vm1")
	if got.N != 1 {
		t.Errorf("cursor after failover = %d, want 1 (the last committed one)", got.N)
	}
	// And the new leader commits.
	if err := commitLog(ctx, next.store, "vm1", 2); err != nil {
		t.Fatalf("the new leader cannot commit: %v", err)
	}
}

// A leader that published a log event and died before writing its cursor
// to the bucket is continued from the event: the cursor in its header.
func TestCursorIsTakenFromTheStream(t *testing.T) {
	c := setup(t)
	a := join(t, c, 0, "a")
	_, t1 := leaderOf(t, 5*ttl, a)
	ctx := context.Background()
	if err := a.store.Begin(ctx, t1); err != nil {
		t.Fatal(err)
	}
	if err := commitLog(ctx, a.store, "vm9", 1); err != nil {
		t.Fatal(err)
	}
	// What the next commit published before the process died: the event
	// with its cursor, and no bucket write.
	raw, _ := json.Marshal(cur{N: 2})
	msg := &nats.Msg{Subject: prefix + ".vm.vm9.log", Data: []byte(`{}`), Header: nats.Header{}}
	msg.Header.Set(cluster.HdrCursor, string(raw))
	b := diesAfter(t, c, a, t1, msg)
	got, _ := cursorIn(t, b.store, state.KindVM, "vm9")
	if got.N != 2 {
		t.Fatalf("cursor = %d, want 2 (from the last log event's header)", got.N)
	}
}

// Builds queued at any member reach the leader's watch list once.
func TestQueuedWatchesReachTheLeader(t *testing.T) {
	c := setup(t)
	a := join(t, c, 0, "a")
	_, t1 := leaderOf(t, 5*ttl, a)
	ctx := context.Background()
	if err := a.store.Begin(ctx, t1); err != nil {
		t.Fatal(err)
	}
	_, js := c.Connect(2)
	kv, _ := js.KeyValue(ctx, cluster.Bucket(stream))
	var wg sync.WaitGroup
	for _, id := range []string{"b1", "b2", "b1"} {
		wg.Add(1)
		go func() { defer wg.Done(); _ = cluster.QueueWatch(ctx, kv, state.KindBuild, id) }()
	}
	wg.Wait()
	n, refused, err := a.store.ApplyWatchQueue(ctx, 10)
	if err != nil || n != 2 || refused != 0 {
		t.Fatalf("ApplyWatchQueue = %d, %d, %v; want 2 new watches", n, refused, err)
	}
	if n, _, _ := a.store.ApplyWatchQueue(ctx, 10); n != 0 {
		t.Errorf("applied again: %d, want 0", n)
	}
	// Past the cap, a queued build is refused and dropped from the queue.
	_ = cluster.QueueWatch(ctx, kv, state.KindBuild, "b3")
	if n, refused, err := a.store.ApplyWatchQueue(ctx, 2); n != 0 || refused != 1 || err != nil {
		t.Errorf("past the cap: added %d, refused %d, %v; want 0, 1", n, refused, err)
	}
	var ws map[string]state.Watch
	_ = a.store.View(func(tx poller.Tx) error { ws, err = tx.Watches(state.KindBuild); return err })
	if len(ws) != 2 || ws["b1"].Source != "webhook" {
		t.Errorf("watches = %v", ws)
	}
}

// Mimics internal/app/fleet.go: Lead loads the knowledge (Begin) and resigns
// if that fails; the poller commits back to back while the term lasts; the
// Store's Resign is the elector's. One Resign (a commit that failed once)
// should cost one failover, not a loop of terms.
func TestStaleResignDoesNotLoop(t *testing.T)            { staleResign(t, false) }
func TestStaleResignDoesNotLoopWithStandby(t *testing.T) { staleResign(t, true) }

func staleResign(t *testing.T, withStandby bool) {
	var bTerms atomic.Int64
	c := setup(t)
	nc, js := c.Connect(0)
	_ = nc
	kv, err := js.KeyValue(context.Background(), cluster.Bucket(stream))
	if err != nil {
		t.Fatal(err)
	}
	var e *cluster.Elector
	var terms, beginFails, resigns atomic.Int64
	var cur atomic.Value // the current term
	store := cluster.NewStore(cluster.StoreOptions{JS: js, KV: kv, Stream: stream, SubjectPrefix: prefix,
		Leading: func(tm cluster.Term) bool { return e.Leading(tm) },
		Resign:  func(tm cluster.Term) { resigns.Add(1); e.Resign(tm) }})
	e, err = cluster.NewElector(cluster.ElectorOptions{JS: js, KV: kv, Stream: stream, Member: "a", LeaseTTL: ttl,
		Lead: func(ctx context.Context, tm cluster.Term) {
			terms.Add(1)
			cur.Store(tm)
			if err := store.Begin(ctx, tm); err != nil {
				beginFails.Add(1)
				e.Resign(tm)
				return
			}
			defer store.End()
			n := 0
			for ctx.Err() == nil {
				n++
				_ = commitLog(ctx, store, "vm1", n%20)
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); e.Run(ctx) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(5 * time.Second)
	for terms.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if terms.Load() == 0 {
		t.Fatal("a never led")
	}
	if withStandby {
		b := join(t, c, 1, "b")
		go func() {
			for range b.terms {
				bTerms.Add(1)
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	before := terms.Load()
	e.Resign(cur.Load().(cluster.Term)) // one failed commit
	time.Sleep(3 * time.Second)
	t.Logf("standby terms %d", bTerms.Load())
	t.Logf("terms after one Resign in 3s: %d (begin failures %d, store resigns %d)", terms.Load()-before, beginFails.Load(), resigns.Load())
	// A commit that really failed (a slow machine) resigns its own term;
	// those are not the loop this guards against (hundreds of terms).
	if n := terms.Load() - before; n > 2+resigns.Load() || n > 10 {
		t.Errorf("one Resign started %d terms in 3s (%d after commits that failed)", n, resigns.Load())
	}
}

// A build's first page: the leader published its log event (with the
// cursor in the header) and died before its first cursor record reached
// the bucket. The next term has no cursor record to reconcile, polls the
// build from the start again, and its event for the same start has the
// same id with more lines: JetStream drops it as a duplicate, and the
// commit writes a cursor past lines that are on the stream nowhere.
func TestRepeatedFirstPageTakesTheStreamsCursor(t *testing.T) {
	c := setup(t)
	a := join(t, c, 0, "a")
	_, t1 := leaderOf(t, 5*ttl, a)
	ctx := context.Background()
	if err := a.store.Begin(ctx, t1); err != nil {
		t.Fatal(err)
	}
	subj := prefix + ".build.b1.log"
	// What a's commit published before it died: event X (lines a,b,c),
	// cursor {n:3} in its header. No bucket write.
	msg := &nats.Msg{Subject: subj, Data: []byte(`{"lines":["a","b","c"]}`), Header: nats.Header{}}
	msg.Header.Set(nats.MsgIdHdr, "log-b1-X")
	msg.Header.Set(cluster.HdrCursor, `{"n":3}`)
	b := diesAfter(t, c, a, t1, msg)
	// b polls from the start: same first line, same id, more lines now.
	// JetStream drops the repeat; the commit takes the stream's cursor
	// instead of its own, so lines d and e are read again next pass.
	err := b.store.Update(ctx, func(tx poller.Tx) error {
		if err := tx.PutCursor(state.KindBuild, "b1", cur{N: 5}); err != nil {
			return err
		}
		return tx.Enqueue(subj, "log-b1-X", []byte(`{"lines":["a","b","c","d","e"]}`))
	})
	if err == nil {
		t.Fatal("the commit of a repeated first page with more lines succeeded; lines d and e would be lost")
	}
	got, have := cursorIn(t, b.store, state.KindBuild, "b1")
	if !have || got.N != 3 {
		t.Errorf("cursor after the repeat = %v %+v, want {N:3} (the stream's)", have, got)
	}
	// The same page again (nothing new) is not an error.
	err = b.store.Update(ctx, func(tx poller.Tx) error {
		if err := tx.PutCursor(state.KindBuild, "b1", cur{N: 3}); err != nil {
			return err
		}
		return tx.Enqueue(subj, "log-b1-X", []byte(`{"lines":["a","b","c"]}`))
	})
	if err != nil {
		t.Errorf("a repeat with the same lines: %v", err)
	}
}

// diesAfter is leader a of term t1 publishing msg (fenced, as its commit
// would) and stopping before it writes anything to the bucket; it returns
// the member that leads next, its knowledge loaded.
func diesAfter(t *testing.T, c *clustertest.Cluster, a *member, t1 cluster.Term, msg *nats.Msg) *member {
	t.Helper()
	ctx := context.Background()
	if _, err := a.js.PublishMsg(ctx, msg, jetstream.WithExpectLastSequenceForSubject(t1.StreamFence, cluster.FenceSubject(stream))); err != nil {
		t.Fatal(err)
	}
	a.stop()
	<-a.done
	b := join(t, c, 1, "b")
	_, t2 := leaderOf(t, 3*ttl, b)
	if err := b.store.Begin(ctx, t2); err != nil {
		t.Fatal(err)
	}
	return b
}

// cursorIn reads the log cursor of kind/id in the store's knowledge.
func cursorIn(t *testing.T, s *cluster.Store, kind, id string) (cur, bool) {
	t.Helper()
	var c cur
	var have bool
	if err := s.View(func(tx poller.Tx) error {
		var err error
		have, err = tx.GetCursor(kind, id, &c)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return c, have
}

// The leader's poller asks the fleet whether a change was announced by
// webhook at any member, so it does not announce it again once past the
// duplicate window. (Found by the session-7 review: it was always no.)
func TestChangeAnnouncedAsksTheFleet(t *testing.T) {
	slowCtx := make(chan context.Context, 1)
	c := setup(t)
	a := join(t, c, 0, "a")
	_, t1 := leaderOf(t, 5*ttl, a)
	s := cluster.NewStore(cluster.StoreOptions{JS: a.js, KV: a.kv, Stream: stream, SubjectPrefix: prefix,
		Leading: func(tm cluster.Term) bool { return a.e.Leading(tm) }, Resign: func(cluster.Term) {},
		Announced: func(ctx context.Context, id string) bool {
			if id != "slow" {
				return id == "by-webhook"
			}
			// A slow read: it waits for as long as the commit's context lets it.
			slowCtx <- ctx
			<-ctx.Done()
			return false
		}})
	if err := s.Begin(context.Background(), t1); err != nil {
		t.Fatal(err)
	}
	var announced, other bool
	if err := s.View(func(tx poller.Tx) error {
		announced, other = tx.ChangeAnnounced("by-webhook", time.Now()), tx.ChangeAnnounced("by-poller", time.Now())
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if !announced || other {
		t.Fatalf("ChangeAnnounced: by-webhook %v, by-poller %v; want true, false", announced, other)
	}

	// The read runs under the commit lock with the Update's context, so a
	// commit that is cancelled stops waiting for it (session-7 review: it
	// had its own 2 s timeout, added to every commit by a slow NATS).
	type key struct{}
	ctx, cancel := context.WithCancel(context.WithValue(context.Background(), key{}, "the update's"))
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- s.Update(ctx, func(tx poller.Tx) error {
			tx.ChangeAnnounced("slow", time.Now())
			return nil
		})
	}()
	got := <-slowCtx
	if got.Value(key{}) != "the update's" {
		t.Fatal("Announced was not given the Update's context")
	}
	cancel()
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("Update after its context was cancelled: %v", err)
	}
}
