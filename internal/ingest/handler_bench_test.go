package ingest_test

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cakework-relay/cakework-relay/internal/httpapi"
	"github.com/cakework-relay/cakework-relay/internal/ingest"
	"github.com/cakework-relay/cakework-relay/internal/state"
)

// BenchmarkCakeworkWebhook runs signed Cakework build webhooks (a new build
// and a new webhook-id each, random ids) through the router and the handler
// into a real store, from 64 goroutines, without HTTP transport or the
// outbox publisher. Besides ns/op it reports the process CPU per webhook
// and the pages bbolt wrote per webhook.
//
//	go test -run '^$' -bench CakeworkWebhook -benchmem ./internal/ingest
func BenchmarkCakeworkWebhook(b *testing.B) {
	st, err := state.Open(state.Options{Dir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	cfg := defaultIngestConfig()
	cfg.OutboxLimit = 1 << 30
	in, err := ingest.New(ingest.Options{Config: cfg, Store: st, Registerer: prometheus.NewRegistry()})
	if err != nil {
		b.Fatal(err)
	}
	// The server the relay runs, with its exact-route fast path.
	r := httpapi.New(httpapi.Options{})
	in.Mount(r)

	type pre struct {
		body []byte
		h    http.Header
	}
	const n = 1 << 14
	reqs := make([]pre, n)
	rng := rand.New(rand.NewPCG(1, 2))
	now := time.Now()
	for i := range reqs {
		body := fmt.Appendf(nil, `{"buildId":"%016x%08x","imageId":"img-%d"}`, rng.Uint64(), rng.Uint32(), i)
		reqs[i] = pre{body, sign(b, testSecret, fmt.Sprintf("msg_%016x%08x", rng.Uint64(), rng.Uint32()), now, body)}
	}
	var next atomic.Int64
	st0 := st.Stats()
	var ru0, ru1 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	b.SetParallelism(32) // 64 senders on 2 cores
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := next.Add(1) - 1
			if i >= n {
				b.Errorf("b.N is above the %d pre-built requests; run with -benchtime 10000x", n)
				return
			}
			p := reqs[i]
			w := httptest.NewRecorder()
			req := httptest.NewRequest(http.MethodPost, "/webhooks/cakework", bytes.NewReader(p.body))
			req.Header = p.h.Clone()
			req.Header.Set("Content-Type", "application/json")
			r.ServeHTTP(w, req)
			if w.Code != http.StatusAccepted {
				b.Errorf("status %d: %s", w.Code, w.Body)
				return
			}
			_, _ = io.Copy(io.Discard, w.Body)
		}
	})
	b.StopTimer()
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	st1 := st.Stats()
	cpu := time.Duration(ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano())
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/op")
	// Webhooks go to the journal; bbolt's pages are the checkpoints'.
	b.ReportMetric(float64(st1.PagesWritten-st0.PagesWritten)/float64(b.N), "bbolt-pages/op")
	if c := st1.JournalBatches - st0.JournalBatches; c > 0 {
		b.ReportMetric(float64(st1.JournalRecords-st0.JournalRecords)/float64(c), "webhooks/batch")
	}
}
