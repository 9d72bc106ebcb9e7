// Command sizing measures what the relay's memory grows with, per item:
// a remembered webhook id (the seen index), a watched build (the poller's
// watch list, read a page at a time), and a message on the stream with its
// own subject and Nats-Msg-Id (JetStream's per-subject index and
// duplicate-window map, in the embedded server). It reports the Go heap in
// use after a collection, before and after adding N of each, divided by N.
// The figures feed the README's "Sizing".
//
//	go run ./bench/sizing [-n 100000]
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cakework-relay/cakework-relay/internal/bus"
	"github.com/cakework-relay/cakework-relay/internal/state"
)

func main() {
	n := flag.Int("n", 100000, "items of each kind")
	flag.Parse()
	fmt.Printf("go %s, %d items each; heap in use after a GC, per item\n\n", runtime.Version(), *n)
	seenIDs(*n, false)
	seenIDs(*n, true)
	watches(*n)
	stream(*n, true, true)
	stream(*n, false, true)
	stream(*n, false, false)
}

func heap() int64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}

func tempDir() string {
	d, err := os.MkdirTemp("", "relay-sizing-")
	if err != nil {
		log.Fatal(err)
	}
	return d
}

func openStore(dir string) *state.Store {
	st, err := state.Open(state.Options{Dir: dir})
	if err != nil {
		log.Fatal(err)
	}
	return st
}

// seenIDs: Cakework webhook-ids remembered with their event id (withEvent)
// or without.
func seenIDs(n int, withEvent bool) {
	dir := tempDir()
	defer os.RemoveAll(dir)
	st := openStore(dir)
	defer st.Close()
	now := time.Now()
	before := heap()
	for i := 0; i < n; i += 1000 {
		if err := st.Accept(context.Background(), func(tx *state.AcceptTx) error {
			for j := i; j < min(i+1000, n); j++ {
				id := fmt.Sprintf("msg_2x9Kd8f3Lq0Zp%08d", j)
				var err error
				if withEvent {
					_, err = tx.SeenWebhookEvent("cakework", id, fmt.Sprintf("%032x", j), now, now.Add(72*time.Hour))
				} else {
					_, err = tx.SeenWebhook("cakework", id, now, now.Add(72*time.Hour))
				}
				if err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			log.Fatal(err)
		}
	}
	if err := st.Checkpoint(context.Background()); err != nil {
		log.Fatal(err)
	}
	after := heap()
	what := "seen id"
	if withEvent {
		what = "seen id with its event id"
	}
	fmt.Printf("%-44s %6.1f B\n", what, float64(after-before)/float64(n))
}

// watches: build watches queued as ingest does, folded into the watch list;
// then what one builds tick holds: before, the whole list decoded into a
// map (Tx.Watches); now, one page (Tx.WatchesPage).
func watches(n int) {
	dir := tempDir()
	defer os.RemoveAll(dir)
	st := openStore(dir)
	defer st.Close()
	now := time.Now()
	before := heap()
	for i := 0; i < n; i += 1000 {
		if err := st.Accept(context.Background(), func(tx *state.AcceptTx) error {
			for j := i; j < min(i+1000, n); j++ {
				raw, err := state.EncodeQueuedWatch(state.KindBuild, fmt.Sprintf("bld_2x9Kd8f3Lq0Zp%08d", j), state.Watch{Source: "webhook", AddedAt: now})
				if err != nil {
					return err
				}
				if err := tx.QueueWatch(raw); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			log.Fatal(err)
		}
	}
	if _, _, err := st.ApplyWatchQueueCapped(context.Background(), 0); err != nil {
		log.Fatal(err)
	}
	after := heap()
	fi, _ := os.Stat(filepath.Join(dir, state.FileName))
	fmt.Printf("%-44s %6.1f B  (relay.db: %.0f B per watch)\n", "watched build, at rest", float64(after-before)/float64(n), float64(fi.Size())/float64(n))
	var whole map[string]state.Watch
	_ = st.View(func(tx *state.Tx) error {
		var err error
		whole, err = tx.Watches(state.KindBuild)
		return err
	})
	held := heap()
	fmt.Printf("%-44s %6.1f B  (what every tick held before: %d watches decoded)\n", "watched build, whole list decoded", float64(held-after)/float64(n), len(whole))
	whole = nil
	base := heap()
	var page []state.WatchEntry
	_ = st.View(func(tx *state.Tx) error {
		var err error
		page, err = tx.WatchesPage(state.KindBuild, "", 500)
		return err
	})
	fmt.Printf("%-44s %6.1f KB (one page of %d, whatever the list's length)\n", "a tick's page", float64(heap()-base)/1024, len(page))
	runtime.KeepAlive(page)
}

// stream: n messages, each with its own subject (distinct) or all on one
// subject, each with its own Nats-Msg-Id (msgID) or none, into the
// embedded server with a 10-minute duplicate window. The differences
// between the three runs are the per-subject index and the
// duplicate-window map.
func stream(n int, distinct, msgID bool) {
	dir := tempDir()
	defer os.RemoveAll(dir)
	ctx := context.Background()
	b, err := bus.Open(ctx, bus.Options{StoreDir: filepath.Join(dir, "jetstream"), Stream: "CAKEWORK", SubjectPrefix: "cakework", DuplicateWindow: 10 * time.Minute, MaxAge: 168 * time.Hour})
	if err != nil {
		log.Fatal(err)
	}
	defer b.Close(ctx)
	before := heap()
	payload := make([]byte, 200)
	var futs []jetstream.PubAckFuture
	for i := range n {
		subj := "cakework.build.bld_same.succeeded"
		if distinct {
			subj = fmt.Sprintf("cakework.build.bld_2x9Kd8f3Lq0Zp%08d.succeeded", i)
		}
		id := ""
		if msgID {
			id = fmt.Sprintf("%032x", i)
		}
		f, err := b.PublishAsync(subj, id, payload, nil)
		if err != nil {
			log.Fatal(err)
		}
		futs = append(futs, f)
		if len(futs) == 2000 {
			for _, f := range futs {
				select {
				case <-f.Ok():
				case err := <-f.Err():
					log.Fatal(err)
				}
			}
			futs = futs[:0]
		}
	}
	for _, f := range futs {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			log.Fatal(err)
		}
	}
	futs = nil
	after := heap()
	what := "stream message, one subject, own msg id"
	switch {
	case distinct:
		what = "stream message, own subject and msg id"
	case !msgID:
		what = "stream message, one subject, no msg id"
	}
	fmt.Printf("%-44s %6.1f B\n", what, float64(after-before)/float64(n))
}
