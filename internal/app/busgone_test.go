package app

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/bus"
	"github.com/cakework-relay/cakework-relay/internal/ingest"
	"github.com/cakework-relay/cakework-relay/internal/sinks/httpcb"
)

// recorder is an HTTP callback target that keeps every body.
type recorder struct {
	mu  sync.Mutex
	got []string
	srv *httptest.Server
}

func (r *recorder) all() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.got, "\n")
}

func newRecorder(t *testing.T) *recorder {
	r := &recorder{}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.got = append(r.got, string(b))
		r.mu.Unlock()
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *recorder) has(s string) bool { return strings.Contains(r.all(), s) }

func (r *recorder) wait(t *testing.T, s string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !r.has(s) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if !r.has(s) {
		t.Fatalf("%s was never delivered", s)
	}
}

func post(t *testing.T, a *App, build, image string) {
	t.Helper()
	resp, err := http.Post("http://"+a.HTTPAddr()+"/webhooks/cakework/build/succeeded?token=hooktoken", "application/json",
		strings.NewReader(`{"buildId":"`+build+`","imageId":"`+image+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("webhook: %d", resp.StatusCode)
	}
}

func readyz(t *testing.T, a *App) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + a.HTTPAddr() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// A sink's consumer deleted on the server (an operator of an external
// NATS can) is re-created from the last sequence the sink acknowledged,
// kept by the relay: while the relay runs, and across a restart with the
// deletion and new events in between. /readyz says so.
func TestDeletedConsumerIsRecreatedAfterWhatWasAcked(t *testing.T) {
	rec := newRecorder(t)
	cfg := testConfig(t)
	cfg.Ingest.Cakework = ingest.CakeworkConfig{Configured: true, Token: "hooktoken"}
	cfg.Sinks.HTTP = []httpcb.Config{(httpcb.Config{Name: "app", URL: rec.srv.URL, Secret: "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD", Events: []string{"*"}}).WithDefaults()}
	ctx := context.Background()

	a := startApp(t, Options{Config: cfg})
	post(t, a, "b1", "img-1")
	rec.wait(t, "img-1")
	// Deleted while running: the next events still arrive.
	if err := a.Core().Bus.JetStream().DeleteConsumer(ctx, cfg.Bus.Stream, "sink_app"); err != nil {
		t.Fatal(err)
	}
	post(t, a, "b2", "img-2")
	rec.wait(t, "img-2")
	code, body := readyz(t, a)
	if code != http.StatusOK || !strings.Contains(body, "consumer sink_app") || !strings.Contains(body, "re-created") {
		t.Errorf("/readyz does not tell of the deleted consumer: %d %s", code, body)
	}
	if err := a.Stop(ctx); err != nil {
		t.Fatal(err)
	}

	// While the relay is down: the consumer is deleted and an event (the
	// relay's own, signed with its key) is stored.
	key, err := loadInstallKey(cfg)
	if err != nil {
		t.Fatal(err)
	}
	b, err := bus.Open(ctx, bus.Options{StoreDir: bus.StoreDir(cfg.DataDir), Stream: cfg.Bus.Stream, SubjectPrefix: cfg.Bus.SubjectPrefix,
		DuplicateWindow: cfg.Bus.Window(), MaxAge: cfg.Bus.MaxAge, MACKey: key.mac, CutoverFile: bus.CutoverFile(cfg.DataDir), CheckInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.JetStream().DeleteConsumer(ctx, cfg.Bus.Stream, "sink_app"); err != nil {
		t.Fatal(err)
	}
	gap, _ := json.Marshal(map[string]any{"specversion": "1.0", "id": "gap-1", "source": "cakework-relay", "type": "com.cakework.build.failed",
		"subject": "b3", "time": time.Now().UTC(), "datacontenttype": "application/json", "data": map[string]any{"buildId": "b3", "note": "in-the-gap"}})
	if _, err := b.Publish(ctx, cfg.Bus.SubjectPrefix+".build.b3.failed", "gap-1", gap, nil); err != nil {
		t.Fatal(err)
	}
	b.Close(ctx)

	a2 := startApp(t, Options{Config: cfg})
	rec.wait(t, "in-the-gap")
	if _, body := readyz(t, a2); !strings.Contains(body, "consumer sink_app") {
		t.Errorf("/readyz after the restart: %s", body)
	}
}

// A deleted stream is re-created, and /readyz says what happened.
func TestDeletedStreamIsRecreatedAndReported(t *testing.T) {
	cfg := testConfig(t)
	a := startApp(t, Options{Config: cfg})
	b := a.Core().Bus
	ctx := context.Background()
	if err := b.JetStream().DeleteStream(ctx, cfg.Bus.Stream); err != nil {
		t.Fatal(err)
	}
	b.CheckStreams(ctx)
	if _, err := b.JetStream().Stream(ctx, cfg.Bus.Stream); err != nil {
		t.Fatal("the stream was not re-created:", err)
	}
	if code, body := readyz(t, a); code != http.StatusOK || !strings.Contains(body, "stream "+cfg.Bus.Stream+" was missing") {
		t.Errorf("/readyz: %d %s", code, body)
	}
}
