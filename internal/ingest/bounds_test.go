package ingest_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/clock"
	"github.com/cakework-relay/cakework-relay/internal/ingest"
)

// serveDirect runs one request through the relay's handler in-process, with
// no HTTP server around it (which would drain an unread body itself).
func (e *env) serveDirect(path string, h http.Header, body io.Reader, length int64) *httptest.ResponseRecorder {
	hr := httptest.NewRequest(http.MethodPost, path, body)
	hr.ContentLength = length
	for k, v := range h {
		hr.Header[k] = v
	}
	hr.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	e.api.ServeHTTP(rec, hr)
	return rec
}

// failingReader fails the test if anything reads it.
type failingReader struct{ t *testing.T }

func (f failingReader) Read([]byte) (int, error) {
	f.t.Error("the body was read before the cheap checks refused the request")
	return 0, io.EOF
}

func TestCheapChecksComeBeforeTheBody(t *testing.T) {
	cfg := defaultIngestConfig()
	cfg.Webhooks = []ingest.WebhookConfig{{Name: "tok", Token: "s3cret"}}
	e := newEnv(t, cfg)
	body := failingReader{t}
	stale := sign(t, testSecret, "m1", e.clock.Now().Add(-time.Hour), []byte(`{}`))
	for _, tt := range []struct {
		name, path string
		h          http.Header
		contains   string
	}{
		{"no signature headers", "/webhooks/cakework", http.Header{}, "missing webhook-id"},
		{"stale timestamp", "/webhooks/cakework", stale, "away from the relay's clock"},
		{"wrong token", "/webhooks/tok", http.Header{"Authorization": {"Bearer nope"}}, "wrong token"},
		{"no token", "/webhooks/tok", http.Header{}, "wrong token"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			n := len(e.rec.Records())
			rec := e.serveDirect(tt.path, tt.h, body, 1000)
			if rec.Code != http.StatusUnauthorized {
				t.Fatalf("got %d %s, want 401", rec.Code, rec.Body)
			}
			// The answer says nothing before auth; the log says why.
			var logged []string
			for _, r := range e.rec.Records()[n:] {
				logged = append(logged, r.Msg)
			}
			if !strings.Contains(strings.Join(logged, "\n"), tt.contains) {
				t.Fatalf("the log %q does not mention %q", logged, tt.contains)
			}
		})
	}
}

func TestBodiesInFlightAreCapped(t *testing.T) {
	e := &env{t: t, dir: t.TempDir(), cfg: defaultIngestConfig(), max: 4096, clock: clock.NewFake(epoch), inFlight: 8192}
	e.open()
	inFlight := func() float64 { return metricValue(t, e, "relay_ingest_body_bytes_in_flight") }
	// Two uploads of 4000 bytes that stall after their headers hold 8000
	// of the 8192 bytes.
	type stalled struct {
		w    *io.PipeWriter
		body []byte
		done chan *httptest.ResponseRecorder
	}
	var held []stalled
	for i := range 2 {
		id := "b" + strconv.Itoa(i)
		body := []byte(`{"buildId":"` + id + `","imageId":"i","pad":"` + strings.Repeat("x", 4000-len(id)-37) + `"}`)
		if len(body) != 4000 {
			t.Fatalf("body is %d bytes", len(body))
		}
		pr, pw := io.Pipe()
		s := stalled{w: pw, body: body, done: make(chan *httptest.ResponseRecorder, 1)}
		h := sign(t, testSecret, "held"+id, e.clock.Now(), body)
		go func() { s.done <- e.serveDirect("/webhooks/cakework", h, pr, int64(len(body))) }()
		held = append(held, s)
	}
	for inFlight() != 8000 {
		time.Sleep(time.Millisecond)
	}
	small := `{"buildId":"b9","imageId":"i","pad":"` + strings.Repeat("x", 300) + `"}`
	r := e.do(req{body: small, secret: testSecret, msgID: "small"})
	wantErr(t, r, http.StatusServiceUnavailable, "http.max_body_bytes_in_flight 8192")
	if r.retryAfter == "" {
		t.Fatal("503 without Retry-After")
	}
	if got := metricValue(t, e, "relay_ingest_body_bytes_refused_total"); got != 1 {
		t.Fatalf("relay_ingest_body_bytes_refused_total %v, want 1", got)
	}
	// The held uploads finish and are accepted; their bytes are released.
	for _, s := range held {
		if _, err := s.w.Write(s.body); err != nil {
			t.Fatal(err)
		}
		s.w.Close()
		rec := <-s.done
		if rec.Code != http.StatusAccepted {
			t.Fatalf("held upload: %d %s", rec.Code, rec.Body)
		}
	}
	if got := inFlight(); got != 0 {
		t.Fatalf("%v bytes still in flight", got)
	}
	ok202(t, e.do(req{body: small, secret: testSecret, msgID: "small"}))
}

// metricValue is the value of an unlabelled gauge or counter on the env's
// registry.
func metricValue(t *testing.T, e *env, name string) float64 {
	t.Helper()
	g, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range g {
		if mf.GetName() == name {
			m := mf.GetMetric()[0]
			if m.GetGauge() != nil {
				return m.GetGauge().GetValue()
			}
			return m.GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

func TestBodiesTheSinksCouldNotDeliverAreRefused(t *testing.T) {
	cfg := defaultIngestConfig()
	cfg.Webhooks = []ingest.WebhookConfig{{Name: "gen", InsecureNoAuth: true}}
	e := newEnv(t, cfg)
	deep := func(n int) string { return `{"a":` + strings.Repeat("[", n) + strings.Repeat("]", n) + `}` }
	// A bracket inside a string is not nesting.
	ok202(t, e.do(req{path: "/webhooks/gen", body: `{"s":"` + strings.Repeat("[", 600) + `"}`}))
	ok202(t, e.do(req{path: "/webhooks/gen", body: deep(511)})) // 512 with the object
	wantErr(t, e.do(req{path: "/webhooks/gen", body: deep(512)}), 400, "more than 512 levels deep")
	wantErr(t, e.do(req{body: `{"buildId":"b","imageId":` + strings.Repeat("[", 600) + `}`, secret: testSecret}), 400, "more than 512 levels deep")
	wantErr(t, e.do(req{path: "/webhooks/gen", body: "{\"a\":\"caf\xe9\"}"}), 400, "not valid UTF-8 (first bad byte at offset 9)")
	wantErr(t, e.do(req{body: "{\"buildId\":\"b\",\"imageId\":\"\xff\xfe\"}", secret: testSecret}), 400, "not valid UTF-8")
	if got := len(e.stream()); got != 2 {
		t.Fatalf("%d events on the stream, want the 2 accepted", got)
	}
}

// Watches wait in a bounded queue: past MaxQueuedWatches (the poller's
// max_watched) a build's webhook is accepted and published, but no watch
// is queued until the poller folds the queue in.
func TestQueuedWatchesAreBounded(t *testing.T) {
	e := &env{t: t, dir: t.TempDir(), cfg: defaultIngestConfig(), max: 4096, clock: clock.NewFake(epoch), maxQueued: 2}
	e.open()
	for _, id := range []string{"b1", "b2", "b3"} {
		ok202(t, e.do(req{body: `{"buildId":"` + id + `","imageId":"i"}`, secret: testSecret}))
	}
	if n := e.store.QueuedWatches(); n != 2 {
		t.Fatalf("%d watches queued, want 2", n)
	}
	if got := metricValue(t, e, "relay_ingest_watches_not_queued_total"); got != 1 {
		t.Fatalf("relay_ingest_watches_not_queued_total %v, want 1", got)
	}
	// The count survives a restart (the queue is in the journal and bbolt).
	e.restart()
	if n := e.store.QueuedWatches(); n != 2 {
		t.Fatalf("%d watches queued after a restart, want 2", n)
	}
	if n, err := e.store.ApplyWatchQueue(context.Background()); err != nil || n != 2 {
		t.Fatalf("folded %d (%v), want 2", n, err)
	}
	if n := e.store.QueuedWatches(); n != 0 {
		t.Fatalf("%d watches queued after the fold", n)
	}
	ok202(t, e.do(req{body: `{"buildId":"b4","imageId":"i"}`, secret: testSecret}))
	if n := e.store.QueuedWatches(); n != 1 {
		t.Fatalf("%d watches queued, want 1", n)
	}
	if got := len(e.stream()); got != 4 {
		t.Fatalf("%d events, want every webhook's", got)
	}
}
