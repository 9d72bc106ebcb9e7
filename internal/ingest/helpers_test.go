package ingest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/cakework-relay/cakework-relay/internal/bus"
	"github.com/cakework-relay/cakework-relay/internal/clock"
	"github.com/cakework-relay/cakework-relay/internal/event"
	"github.com/cakework-relay/cakework-relay/internal/httpapi"
	"github.com/cakework-relay/cakework-relay/internal/ingest"
	"github.com/cakework-relay/cakework-relay/internal/logtest"
	"github.com/cakework-relay/cakework-relay/internal/outbox"
	"github.com/cakework-relay/cakework-relay/internal/state"
)

const (
	testSecret  = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	otherSecret = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
)

var epoch = time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)

// env is one relay's worth of ingest: a real bbolt store, and on demand a
// real embedded JetStream with the outbox publisher draining into it.
type env struct {
	t     *testing.T
	dir   string
	cfg   ingest.Config
	max   int64
	clock *clock.Fake
	store *state.Store
	in    *ingest.Ingest
	reg   *prometheus.Registry
	srv   *httptest.Server
	api   *httpapi.Server
	bus   *bus.Bus
	// inFlight is Options.MaxBodyBytesInFlight (0: the default).
	inFlight int64
	// maxQueued is Options.MaxQueuedWatches.
	maxQueued int
	// noPoller builds ingest as when no poller runs (no API key).
	noPoller bool
	log      *slog.Logger
	rec      *logtest.Recorder
}

func defaultIngestConfig() ingest.Config {
	return ingest.Config{
		Cakework:           ingest.CakeworkConfig{Configured: true, Secret: testSecret},
		OutboxLimit:        100000,
		SeenTTL:            72 * time.Hour,
		TimestampTolerance: 5 * time.Minute,
	}
}

func newEnv(t *testing.T, cfg ingest.Config) *env {
	t.Helper()
	e := &env{t: t, dir: t.TempDir(), cfg: cfg, max: 4096, clock: clock.NewFake(epoch)}
	e.open()
	return e
}

func (e *env) open() {
	t := e.t
	t.Helper()
	st, err := state.Open(state.Options{Dir: e.dir})
	if err != nil {
		t.Fatal(err)
	}
	e.store = st
	if e.rec == nil {
		e.log, e.rec = logtest.New()
	}
	e.reg = prometheus.NewRegistry()
	in, err := ingest.New(ingest.Options{
		Config: e.cfg, MaxBodyBytes: e.max, MaxBodyBytesInFlight: e.inFlight, SubjectPrefix: "cakework",
		Store: st, Clock: e.clock, Registerer: e.reg, Logger: e.log,
		WatchBuilds:      !e.noPoller, // as when the poller runs
		MaxQueuedWatches: e.maxQueued,
	})
	if err != nil {
		t.Fatal(err)
	}
	e.in = in
	// The server the relay runs, with its exact-route fast path.
	r := httpapi.New(httpapi.Options{MaxBodyBytes: e.max})
	in.Mount(r)
	e.api = r
	e.srv = httptest.NewServer(r)
	t.Cleanup(e.close)
}

func (e *env) close() {
	if e.srv != nil {
		e.srv.Close()
		e.srv = nil
	}
	if e.bus != nil {
		e.bus.Close(context.Background())
		e.bus = nil
	}
	e.store.Close()
}

// restart simulates a relay restart on the same data dir.
func (e *env) restart() {
	e.close()
	e.open()
}

// publish starts the embedded bus and the outbox publisher, and waits until
// the outbox is empty.
func (e *env) publish() *bus.Bus {
	t := e.t
	t.Helper()
	if e.bus == nil {
		b, err := bus.Open(context.Background(), bus.Options{StoreDir: filepath.Join(e.dir, "jetstream"), Stream: "CAKEWORK", SubjectPrefix: "cakework", DuplicateWindow: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		e.bus = b
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); outbox.New(outbox.Options{Store: e.store, Bus: b}).Run(ctx) }()
		t.Cleanup(func() { cancel(); <-done })
	}
	deadline := time.Now().Add(10 * time.Second)
	for e.store.OutboxDepth() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("outbox not drained: %d left", e.store.OutboxDepth())
		}
		time.Sleep(5 * time.Millisecond)
	}
	return e.bus
}

// stream returns every event on the stream, in order.
func (e *env) stream() []event.Event {
	t := e.t
	t.Helper()
	b := e.publish()
	ctx := context.Background()
	s, err := b.JetStream().Stream(ctx, "CAKEWORK")
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c, err := b.JetStream().OrderedConsumer(ctx, "CAKEWORK", jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var out []event.Event
	for i := uint64(0); i < info.State.Msgs; i++ {
		m, err := c.Next(jetstream.FetchMaxWait(2 * time.Second))
		if err != nil {
			t.Fatal(err)
		}
		ev, err := event.Decode(m.Data())
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if got := m.Headers().Get(jetstream.MsgIDHeader); got != ev.ID {
			t.Fatalf("Nats-Msg-Id %q, event id %q", got, ev.ID)
		}
		if m.Subject() != ev.NATSSubject("cakework") {
			t.Fatalf("subject %s for event %s", m.Subject(), ev.Type)
		}
		out = append(out, ev)
	}
	return out
}

// req describes one webhook request.
type req struct {
	path    string
	body    string
	ct      string // "-" for none
	secret  string // sign with this Standard Webhooks secret
	msgID   string // webhook-id; "" with a secret: a fresh one
	at      time.Time
	headers map[string]string
}

var msgSeq struct {
	sync.Mutex
	n int
}

func nextMsgID() string {
	msgSeq.Lock()
	defer msgSeq.Unlock()
	msgSeq.n++
	return fmt.Sprintf("msg_%d", msgSeq.n)
}

// sign returns Standard Webhooks headers made with the reference library.
func sign(t testing.TB, secret, msgID string, at time.Time, body []byte) http.Header {
	t.Helper()
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := wh.Sign(msgID, at, body)
	if err != nil {
		t.Fatal(err)
	}
	h := http.Header{}
	h.Set("webhook-id", msgID)
	h.Set("webhook-timestamp", strconv.FormatInt(at.Unix(), 10))
	h.Set("webhook-signature", sig)
	return h
}

type resp struct {
	status     int
	body       map[string]any
	retryAfter string
	raw        string
	// log is what the relay logged while answering (env.do only).
	log string
}

func (e *env) do(r req) resp {
	e.t.Helper()
	n := len(e.rec.Records())
	out := doReq(e.t, e.srv.URL, r, e.clock.Now())
	var lines []string
	for _, rec := range e.rec.Records()[n:] {
		lines = append(lines, rec.Msg)
	}
	out.log = strings.Join(lines, "\n")
	return out
}

func doReq(t testing.TB, base string, r req, now time.Time) resp {
	t.Helper()
	if r.path == "" {
		r.path = "/webhooks/cakework"
	}
	hr, err := http.NewRequest(http.MethodPost, base+r.path, bytes.NewReader([]byte(r.body)))
	if err != nil {
		t.Fatal(err)
	}
	switch r.ct {
	case "":
		hr.Header.Set("Content-Type", "application/json")
	case "-":
	default:
		hr.Header.Set("Content-Type", r.ct)
	}
	if r.secret != "" {
		if r.msgID == "" {
			r.msgID = nextMsgID()
		}
		at := r.at
		if at.IsZero() {
			at = now
		}
		for k, v := range sign(t, r.secret, r.msgID, at, []byte(r.body)) {
			hr.Header[k] = v
		}
	} else if r.msgID != "" {
		hr.Header.Set("webhook-id", r.msgID)
	}
	for k, v := range r.headers {
		hr.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(hr)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var buf bytes.Buffer
	buf.ReadFrom(res.Body)
	out := resp{status: res.StatusCode, retryAfter: res.Header.Get("Retry-After"), raw: buf.String()}
	if ct := res.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("answer %d has Content-Type %q", res.StatusCode, ct)
	}
	if err := json.Unmarshal(buf.Bytes(), &out.body); err != nil {
		t.Errorf("answer %d is not JSON: %q", res.StatusCode, buf.String())
	}
	return out
}

// ok202 asserts an acceptance and returns the event id.
func ok202(t *testing.T, r resp) string {
	t.Helper()
	if r.status != http.StatusAccepted {
		t.Fatalf("status %d, want 202: %s", r.status, r.raw)
	}
	id, _ := r.body["id"].(string)
	if id == "" || r.body["duplicate"] != nil {
		t.Fatalf("202 body %s", r.raw)
	}
	return id
}

func dup200(t *testing.T, r resp, wantID string) {
	t.Helper()
	if r.status != http.StatusOK || r.body["duplicate"] != true || r.body["id"] != wantID {
		t.Fatalf("want 200 duplicate id %s, got %d %s", wantID, r.status, r.raw)
	}
}

// dupNoID wants a 200 duplicate that claims no event id: nothing was
// published for what it repeats.
func dupNoID(t *testing.T, r resp) {
	t.Helper()
	if _, has := r.body["id"]; r.status != http.StatusOK || r.body["duplicate"] != true || has {
		t.Fatalf("want 200 duplicate with no id, got %d %s", r.status, r.raw)
	}
}

func wantErr(t *testing.T, r resp, status int, contains string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d: %s", r.status, status, r.raw)
	}
	msg, _ := r.body["error"].(string)
	if msg == "" || len(r.body) != 1 {
		t.Fatalf("error body %s, want {\"error\": ...}", r.raw)
	}
	if status == http.StatusUnauthorized {
		// Unauthenticated callers learn nothing: the reason is logged.
		if !strings.HasPrefix(msg, "unauthorized: ") {
			t.Fatalf("401 error %q is not the generic one", msg)
		}
		if contains != "" && !strings.Contains(r.log, contains) {
			t.Fatalf("the log %q does not mention %q", r.log, contains)
		}
		return
	}
	if contains != "" && !bytes.Contains([]byte(msg), []byte(contains)) {
		t.Fatalf("error %q does not mention %q", msg, contains)
	}
}

// chunkedBody is a body with no known length (sent chunked).
func chunkedBody(s string) io.ReadCloser { return io.NopCloser(strings.NewReader(s)) }
