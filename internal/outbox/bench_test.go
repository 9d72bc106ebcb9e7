package outbox

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/state"
)

// BenchmarkPublishOnce publishes batches of 256 events (600-byte payloads)
// from the outbox to the embedded JetStream, with an ack per message or one
// per batch, and reports the process's CPU per event during the publishes
// (store, nats.go and the server; filling the outbox is not counted).
//
//	go test -run '^$' -bench PublishOnce -benchtime 200x -count 3 ./internal/outbox
func BenchmarkPublishOnce(b *testing.B) {
	for _, mode := range []string{"each", "one"} {
		b.Run(mode, func(b *testing.B) {
			st, bs, _ := openAll(b, b.TempDir())
			r := New(Options{Store: st, Bus: bs, Batch: 256})
			payload := make([]byte, 600)
			next := 0
			fill := func() {
				if err := st.Update(context.Background(), func(tx *state.Tx) error {
					for range 256 {
						if err := tx.Enqueue(fmt.Sprintf("cakework.build.b%d.succeeded", next), fmt.Sprintf("evt-%d", next), payload); err != nil {
							return err
						}
						next++
					}
					return nil
				}); err != nil {
					b.Fatal(err)
				}
			}
			fill()
			if _, err := r.PublishOnce(context.Background()); err != nil {
				b.Fatal(err)
			}
			var cpu time.Duration
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				fill()
				if mode == "each" {
					r.seqKnown = false
				}
				c0 := processCPU()
				b.StartTimer()
				if n, err := r.PublishOnce(context.Background()); err != nil || n != 256 {
					b.Fatalf("published %d, %v", n, err)
				}
				b.StopTimer()
				cpu += processCPU() - c0
			}
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N*256), "cpu-ns/event")
			if got := batches(r, mode); got < float64(b.N) {
				b.Fatalf("%v batches acked %q, want %d", got, mode, b.N)
			}
		})
	}
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
