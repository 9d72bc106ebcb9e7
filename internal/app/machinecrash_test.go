package app

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cakework-relay/cakework-relay/internal/state"
	"github.com/cakework-relay/cakework-relay/internal/state/statetest"
)

// A machine crash loses what no fsync covered: the embedded JetStream's
// block files past their size at the relay's last sync of them. Every event
// the relay accepted must still reach the stream, once.
//
// The model: the relay's bus sync is wrapped to note each block's size
// before the real sync (what that sync made durable), and then stops
// working, so events acknowledged after it have no sync. (The test trusts
// the syncer to fsync what it was given; internal/bus tests that it
// fdatasyncs the block holding a message. What this tests is the store:
// that nothing acknowledged leaves the journal or the outbox without a
// sync that began after the acknowledgement.) The data dir is
// copied while the relay runs, each block cut to its noted size (a block
// never synced is dropped), and JetStream's index files removed (they may
// be ahead of the cut blocks; the server rebuilds them). A relay started
// on the copy must publish what the cut lost and nothing twice.
func TestAcceptedEventsSurviveAMachineCrash(t *testing.T) {
	cfg := testConfig(t)
	a := startApp(t, Options{Config: cfg})
	ctx := context.Background()
	st := a.Core().Store
	realSync := a.Core().Bus.StreamSyncer()
	if realSync == nil {
		t.Fatal("the embedded bus has no syncer")
	}
	var (
		mu     sync.Mutex
		synced = map[string]int64{} // block path relative to data_dir -> durable size
		frozen atomic.Bool
	)
	st.SetBusSync(func() error {
		if frozen.Load() {
			return errors.New("test: no more syncs")
		}
		sizes := blockSizes(t, cfg.DataDir)
		if err := realSync(); err != nil {
			return err
		}
		mu.Lock()
		for k, v := range sizes {
			synced[k] = v
		}
		mu.Unlock()
		return nil
	})

	var want []string
	round := func(r, leave int) {
		for i := range 40 {
			id := fmt.Sprintf("wh-%d-%d", r, i)
			want = append(want, id)
			if err := st.Accept(ctx, func(tx *state.AcceptTx) error {
				return tx.Enqueue("cakework.build.b"+id+".succeeded", id, []byte(`{"n":"`+id+`"}`))
			}); err != nil {
				t.Fatal(err)
			}
		}
		// Polled events go through the bbolt outbox.
		if err := st.Update(ctx, func(tx *state.Tx) error {
			for i := range 10 {
				id := fmt.Sprintf("poll-%d-%d", r, i)
				want = append(want, id)
				if err := tx.Enqueue("cakework.vm.v"+id+".started", id, []byte(`{}`)); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		waitDrained(t, st, leave)
	}
	round(0, 0)
	if err := st.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	round(1, 0)
	if err := st.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	frozen.Store(true)
	// Acknowledged, never synced: the polled events wait in the outbox
	// for a sync, the webhooks' in the journal.
	round(2, 10)
	if err := st.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	if st.Stats().BusSyncs == 0 {
		t.Fatal("no bus sync succeeded before the freeze")
	}

	crashed := t.TempDir()
	statetest.CopyDir(t, cfg.DataDir, crashed)
	mu.Lock()
	cut := 0
	err := filepath.Walk(crashed, func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(crashed, p)
		switch {
		case strings.HasSuffix(p, ".blk") && strings.Contains(rel, "streams"+string(filepath.Separator)+cfg.Bus.Stream+string(filepath.Separator)):
			size, ok := synced[rel]
			if !ok {
				cut++
				return os.Remove(p)
			}
			if size < fi.Size() {
				cut++
			}
			return os.Truncate(p, size)
		case filepath.Base(p) == "index.db":
			return os.Remove(p)
		}
		return nil
	})
	mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	if cut == 0 {
		t.Fatal("the crash model cut nothing: the test would prove nothing")
	}

	cfg2 := *cfg
	cfg2.DataDir = crashed
	b := startApp(t, Options{Config: &cfg2})
	waitDrained(t, b.Core().Store, 0)

	s, err := b.Core().Bus.JetStream().Stream(ctx, cfg.Bus.Stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			continue // a gap
		}
		count[m.Header.Get(nats.MsgIdHdr)]++
	}
	for _, id := range want {
		if count[id] != 1 {
			t.Errorf("event %s is on the stream %d times after the crash, want once", id, count[id])
		}
	}
	if len(count) != len(want) {
		t.Errorf("the stream holds %d distinct events, want %d", len(count), len(want))
	}
}

// blockSizes is the size of every JetStream block file under dataDir, by
// path relative to it.
func blockSizes(t *testing.T, dataDir string) map[string]int64 {
	sizes := map[string]int64{}
	err := filepath.Walk(dataDir, func(p string, fi os.FileInfo, err error) error {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if err != nil || fi.IsDir() || !strings.HasSuffix(p, ".blk") {
			return err
		}
		rel, _ := filepath.Rel(dataDir, p)
		sizes[rel] = fi.Size()
		return nil
	})
	if err != nil {
		t.Error(err)
	}
	return sizes
}

// waitDrained waits until the outbox holds leave events.
func waitDrained(t *testing.T, st *state.Store, leave int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for st.OutboxDepth() > leave {
		if time.Now().After(deadline) {
			t.Fatalf("outbox still holds %d events after 10s, want %d", st.OutboxDepth(), leave)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
