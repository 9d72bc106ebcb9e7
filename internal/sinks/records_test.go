package sinks_test

import (
	"context"
	"errors"
	"testing"

	"github.com/cakework-relay/cakework-relay/internal/cluster"
	"github.com/cakework-relay/cakework-relay/internal/sinks"
	"github.com/cakework-relay/cakework-relay/internal/sinks/sinktest"
)

// The fleet's sink records on a real JetStream bucket: keys with slashes
// and dots round-trip through a prefix scan, and a member that read a
// record before another member changed it cannot overwrite it.
func TestKVRecords(t *testing.T) {
	env := sinktest.NewEnv(t)
	ctx := context.Background()
	kv, err := cluster.OpenBucket(ctx, env.Bus.JetStream(), cluster.BucketOptions{Name: cluster.SinksBucket("CAKEWORK"), TTL: cluster.SinkRecordTTL})
	if err != nil {
		t.Fatal(err)
	}
	a, b := sinks.KVRecords(kv), sinks.KVRecords(kv)
	put := func(r sinks.Records, k string, v int) error {
		return r.Update(ctx, func(tx sinks.RecordTx) error { return tx.PutSink("sl", k, v) })
	}
	for k, v := range map[string]int{"flood/build.failed": 1, "flood/vm.idle": 2, "parent/build/b1": 3} {
		if err := put(a, k, v); err != nil {
			t.Fatal(err)
		}
	}
	got := map[string]string{}
	err = b.View(func(tx sinks.RecordTx) error {
		return tx.ForEachSink("sl/flood", func(k string, raw []byte) error { got[k] = string(raw); return nil })
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got["build.failed"] != "1" || got["vm.idle"] != "2" {
		t.Fatalf("scan of sl/flood = %v, want build.failed:1 and vm.idle:2", got)
	}

	// a reads, b writes meanwhile, a's write is refused.
	err = a.Update(ctx, func(tx sinks.RecordTx) error {
		var v int
		if _, err := tx.GetSink("sl", "parent/build/b1", &v); err != nil {
			return err
		}
		if err := put(b, "parent/build/b1", 4); err != nil {
			t.Fatal(err)
		}
		return tx.PutSink("sl", "parent/build/b1", v+10)
	})
	if !errors.Is(err, sinks.ErrRecordConflict) {
		t.Fatalf("a stale write: %v, want ErrRecordConflict", err)
	}
	var v int
	if err := b.View(func(tx sinks.RecordTx) error { _, err := tx.GetSink("sl", "parent/build/b1", &v); return err }); err != nil || v != 4 {
		t.Fatalf("parent = %d (%v), want the other member's 4", v, err)
	}
	// A record created by two members at once: the second create loses.
	err = a.Update(ctx, func(tx sinks.RecordTx) error {
		var x int
		if ok, err := tx.GetSink("sl", "parent/vm/v1", &x); err != nil || ok {
			t.Fatalf("parent/vm/v1 exists (%v)", err)
		}
		if err := put(b, "parent/vm/v1", 1); err != nil {
			t.Fatal(err)
		}
		return tx.PutSink("sl", "parent/vm/v1", 2)
	})
	if !errors.Is(err, sinks.ErrRecordConflict) {
		t.Fatalf("a second create: %v, want ErrRecordConflict", err)
	}
}
