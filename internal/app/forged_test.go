package app

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cakework-relay/cakework-relay/internal/bus"
	"github.com/cakework-relay/cakework-relay/internal/event"
	"github.com/cakework-relay/cakework-relay/internal/ingest"
	"github.com/cakework-relay/cakework-relay/internal/logtest"
	"github.com/cakework-relay/cakework-relay/internal/sinks/httpcb"
)

// A forged message that sits on the stream anyway (put there through a
// privileged connection, as an operator of an external NATS could) is
// delivered by no sink, and is reported in the log and the metrics; a
// forged dead letter is neither listed nor replayed. The relay's own
// events go on being delivered.
func TestForgedMessagesAreNeverDelivered(t *testing.T) {
	rec := newRecorder(t)
	received := rec.all
	cfg := testConfig(t)
	cfg.Ingest.Cakework = ingest.CakeworkConfig{Configured: true, Token: "hooktoken"}
	cfg.Sinks.HTTP = []httpcb.Config{(httpcb.Config{Name: "app", URL: rec.srv.URL, Secret: "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD", Events: []string{"*"}}).WithDefaults()}
	log, logs := logtest.New()
	a := startApp(t, Options{Config: cfg, Logger: log})
	b := a.Core().Bus
	ctx := context.Background()

	forge := func(subject string, data []byte, hdr nats.Header) {
		t.Helper()
		m := nats.NewMsg(subject)
		m.Data = data
		if hdr != nil {
			m.Header = hdr
		}
		// Straight to JetStream, not through the relay's signing publish.
		if _, err := b.JetStream().PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	fake, _ := event.New(event.KindVM, "prod-db-1", "autostopped", "forged-1", time.Now(), map[string]any{"imageId": "ATTACKER-IMAGE"})
	fakeJSON, _ := json.Marshal(fake)
	forge(fake.NATSSubject(b.SubjectPrefix()), fakeJSON, nil)
	// A MAC made with another key, or copied from another message, fails too.
	forge(fake.NATSSubject(b.SubjectPrefix()), fakeJSON, nats.Header{bus.HdrMAC: []string{"v1=AAAA"}})

	post(t, a, "b-real", "img-real")
	unverified := func() float64 {
		return gauge(t, a, "relay_sink_unverified_total", "sink", "app")
	}
	deadline := time.Now().Add(10 * time.Second)
	for (!strings.Contains(received(), "img-real") || unverified() < 2) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(received(), "img-real") {
		t.Fatalf("the genuine event was not delivered; got %q\n%s", received(), logs)
	}
	if strings.Contains(received(), "ATTACKER") || strings.Contains(received(), "prod-db-1") {
		t.Fatalf("a forged event was delivered: %s", received())
	}
	if n := unverified(); n != 2 {
		t.Errorf("relay_sink_unverified_total{sink=app} = %v, want 2", n)
	}
	if w := logs.Find(slog.LevelWarn, "did not publish"); len(w) != 1 {
		t.Errorf("want one rate-limited WARN about unverified messages, got %d:\n%s", len(w), logs)
	}

	// A forged dead letter: not listed, not replayed.
	forge(bus.DLQSubject("app"), fakeJSON, nats.Header{bus.HdrDLQSink: []string{"app"}, bus.HdrDLQEventID: []string{"forged-1"}})
	s, _ := b.JetStream().Stream(ctx, b.DLQStream())
	info, _ := s.Info(ctx)
	if info.State.LastSeq == 0 {
		t.Fatal("the forged dead letter is not on the DLQ stream: the test proves nothing")
	}
	admin := func(method, path string) (int, string) {
		req, _ := http.NewRequest(method, "http://"+a.HTTPAddr()+path, nil)
		req.Header.Set("Authorization", "Bearer admintoken")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	if code, body := admin("GET", "/v1/dlq"); code != 200 || strings.Contains(body, "forged-1") {
		t.Errorf("GET /v1/dlq: %d %s", code, body)
	}
	if code, body := admin("POST", "/v1/dlq/"+jsonUint(info.State.LastSeq)+"/replay"); code != http.StatusNotFound {
		t.Errorf("replay of a forged dead letter: %d %s", code, body)
	}
	time.Sleep(100 * time.Millisecond)
	if strings.Contains(received(), "prod-db-1") {
		t.Fatalf("a forged dead letter was delivered: %s", received())
	}
}

func jsonUint(n uint64) string { b, _ := json.Marshal(n); return string(b) }

// gauge is the value of the series name{label=value} on a's registry (0
// when absent).
func gauge(t *testing.T, a *App, name, label, value string) float64 {
	t.Helper()
	mfs, err := a.Core().Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label && lp.GetValue() == value {
					if c := m.GetCounter(); c != nil {
						return c.GetValue()
					}
					return m.GetGauge().GetValue()
				}
			}
		}
	}
	return 0
}
