package ingest_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/cakework-relay/cakework-relay/internal/clock"
	"github.com/cakework-relay/cakework-relay/internal/event"
	"github.com/cakework-relay/cakework-relay/internal/ingest"
	"github.com/cakework-relay/cakework-relay/internal/state"
)

type buildEventData struct {
	BuildID        string `json:"buildId"`
	ImageID        string `json:"imageId"`
	Status         string `json:"status"`
	CreatedAt      string `json:"createdAt"`
	UpdatedAt      string `json:"updatedAt"`
	PreviousStatus string `json:"previousStatus"`
	ObservedBy     string `json:"observedBy"`
}

func TestEveryCakeworkShapeBecomesOneEvent(t *testing.T) {
	e := newEnv(t, defaultIngestConfig())
	tests := []struct {
		name, path, body       string
		status, image, updated string
	}{
		{"bare success", "", `{"buildId":"b1","imageId":"img1"}`, "succeeded", "img1", ""},
		{"status failed", "", `{"buildId":"b2","status":"failed"}`, "failed", "", ""},
		{"typed succeeded", "", `{"type":"build.succeeded","buildId":"b3","imageId":"img3"}`, "succeeded", "img3", ""},
		{"typed failed", "", `{"type":"build.failed","buildId":"b4"}`, "failed", "", ""},
		{"typed enveloped", "", `{"type":"build.succeeded","timestamp":"2023-03-03T20:22:39.096Z","data":{"buildId":"b5","imageId":"img5"}}`, "succeeded", "img5", ""},
		{"typed created", "", `{"type":"com.cakework.build.created","buildId":"b6"}`, "created", "", ""},
		{"getBuild shape", "", `{"buildId":"b7","imageId":"img7","status":"succeeded","createdAt":"2023-02-24 20:29:40.331","updatedAt":"2023-03-09T02:43:30.243-08:00"}`, "succeeded", "img7", "2023-03-09T10:43:30.243Z"},
		{"getBuild unix ms", "", `{"buildId":"b8","status":"failed","updatedAt":1676625938460}`, "failed", "", "2023-02-17T09:25:38.46Z"},
		{"getBuild UTC suffix", "", `{"buildId":"b9","status":"created","updatedAt":"2023-03-07 06:12:56 UTC"}`, "created", "", "2023-03-07T06:12:56Z"},
		{"path succeeded", "/webhooks/cakework/build/succeeded", `{"buildId":"b10","imageId":"img10"}`, "succeeded", "img10", ""},
		{"path failed", "/webhooks/cakework/build/failed", `{"buildId":"b11"}`, "failed", "", ""},
		{"path failed agreeing status", "/webhooks/cakework/build/failed", `{"buildId":"b12","status":"failed"}`, "failed", "", ""},
		{"unknown keys ignored", "", `{"buildId":"b13","imageId":"i","extra":{"x":1}}`, "succeeded", "i", ""},
	}
	want := map[string]string{} // event id -> test name
	for _, tt := range tests {
		id := ok202(t, e.do(req{path: tt.path, body: tt.body, secret: testSecret}))
		var b struct {
			BuildID string `json:"buildId"`
			Data    struct {
				BuildID string `json:"buildId"`
			} `json:"data"`
		}
		json.Unmarshal([]byte(tt.body), &b)
		bid := b.BuildID + b.Data.BuildID
		if id != event.BuildStatusID(bid, tt.status) {
			t.Fatalf("%s: id %s is not BuildStatusID(%s, %s)", tt.name, id, bid, tt.status)
		}
		want[id] = tt.name
	}
	evs := e.stream()
	if len(evs) != len(tests) {
		t.Fatalf("%d events on the stream, want %d", len(evs), len(tests))
	}
	for i, ev := range evs {
		tt := tests[i]
		if want[ev.ID] != tt.name {
			t.Fatalf("event %d is %s, want %s", i, want[ev.ID], tt.name)
		}
		var d buildEventData
		if err := json.Unmarshal(ev.Data, &d); err != nil {
			t.Fatal(err)
		}
		if ev.Type != "com.cakework.build."+tt.status || d.Status != tt.status || d.ImageID != tt.image || d.ObservedBy != "webhook" || ev.Subject != d.BuildID {
			t.Errorf("%s: event %s subject %s data %+v", tt.name, ev.Type, ev.Subject, d)
		}
		if d.PreviousStatus != "" {
			t.Errorf("%s: previousStatus %q for a build never seen", tt.name, d.PreviousStatus)
		}
		if tt.updated != "" {
			if d.UpdatedAt != tt.updated || ev.Time.Format(time.RFC3339Nano) != tt.updated {
				t.Errorf("%s: updatedAt %s, time %s, want %s", tt.name, d.UpdatedAt, ev.Time.Format(time.RFC3339Nano), tt.updated)
			}
		} else if !ev.Time.Equal(epoch) {
			t.Errorf("%s: time %s, want the observation time %s", tt.name, ev.Time, epoch)
		}
	}
	// getBuild's zone-less createdAt is UTC, and normalized.
	var d buildEventData
	json.Unmarshal(evs[6].Data, &d)
	if d.CreatedAt != "2023-02-24T20:29:40.331Z" {
		t.Errorf("createdAt %s", d.CreatedAt)
	}
	// Every build seen by webhook is watched by the poller: the watch is
	// queued, and lands in the watch list when the poller applies the queue.
	if _, err := e.store.ApplyWatchQueue(context.Background()); err != nil {
		t.Fatal(err)
	}
	err := e.store.View(func(tx *state.Tx) error {
		ws, err := tx.Watches(state.KindBuild)
		if err != nil {
			return err
		}
		if len(ws) != len(tests) || ws["b1"].Source != "webhook" || !ws["b1"].AddedAt.Equal(epoch) {
			t.Errorf("watches: %+v", ws)
		}
		// The build's state record is the poller's, written when it
		// confirms the status.
		if _, ok, _ := tx.GetBuild("b7"); ok {
			t.Error("ingest wrote the build's state record")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestStatusChangeCarriesPreviousStatusAndKeepsWatch(t *testing.T) {
	e := newEnv(t, defaultIngestConfig())
	added := epoch.Add(-time.Hour)
	// The poller saw the build first, unfinished; an admin watch exists.
	err := e.store.Update(context.Background(), func(tx *state.Tx) error {
		if err := tx.PutWatch(state.KindBuild, "b1", state.Watch{Source: "admin", AddedAt: added}); err != nil {
			return err
		}
		return tx.PutBuild("b1", state.BuildState{Status: "created", FirstSeen: added, ObservedBy: "poller", CreatedAt: added})
	})
	if err != nil {
		t.Fatal(err)
	}
	ok202(t, e.do(req{body: `{"buildId":"b1","imageId":"img"}`, secret: testSecret}))
	evs := e.stream()
	var d buildEventData
	json.Unmarshal(evs[0].Data, &d)
	if d.PreviousStatus != "created" || d.Status != "succeeded" {
		t.Fatalf("data %+v", d)
	}
	if _, err := e.store.ApplyWatchQueue(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.store.View(func(tx *state.Tx) error {
		w, _, _ := tx.GetWatch(state.KindBuild, "b1")
		if w.Source != "admin" || !w.AddedAt.Equal(added) {
			t.Errorf("existing watch replaced: %+v", w)
		}
		return nil
	})
}

func TestDuplicatesPublishNothing(t *testing.T) {
	cfg := defaultIngestConfig()
	cfg.Webhooks = []ingest.WebhookConfig{{Name: "plain", Token: "tok"}}
	e := newEnv(t, cfg)
	body := `{"buildId":"b1","imageId":"img"}`

	// The same webhook-id twice: a redelivery.
	id := ok202(t, e.do(req{body: body, secret: testSecret, msgID: "msg_a"}))
	dup200(t, e.do(req{body: body, secret: testSecret, msgID: "msg_a"}), id)
	// A new delivery of a status already recorded.
	dup200(t, e.do(req{body: body, secret: testSecret, msgID: "msg_b"}), id)
	dup200(t, e.do(req{path: "/webhooks/cakework/build/succeeded", body: body, secret: testSecret}), id)

	// The poller recorded a status before the webhook came.
	e.store.Update(context.Background(), func(tx *state.Tx) error {
		return tx.PutBuild("b2", state.BuildState{Status: "failed", ObservedBy: "poller"})
	})
	dup200(t, e.do(req{body: `{"buildId":"b2","status":"failed"}`, secret: testSecret}), event.BuildStatusID("b2", "failed"))
	// A late "created" for a finished build does not turn it back, and
	// claims no id: no created event was published for it.
	dupNoID(t, e.do(req{body: `{"buildId":"b2","status":"created"}`, secret: testSecret}))
	// Nor when only a webhook has told of the finish so far.
	ok202(t, e.do(req{body: `{"buildId":"b3","status":"failed"}`, secret: testSecret}))
	dupNoID(t, e.do(req{body: `{"buildId":"b3","status":"created"}`, secret: testSecret}))

	// Generic receiver, no delivery id: the body identifies the event.
	tok := map[string]string{"Authorization": "Bearer tok"}
	gid := ok202(t, e.do(req{path: "/webhooks/plain", body: `{"a":1}`, headers: tok}))
	dup200(t, e.do(req{path: "/webhooks/plain", body: `{"a":1}`, headers: tok}), gid)
	if gid != event.WebhookID("plain", "", []byte(`{"a":1}`)) {
		t.Fatalf("generic id %s", gid)
	}
	// A token (like a body HMAC) signs no delivery id: the same body with a
	// new delivery id is a replay, not a new event.
	hd := map[string]string{"Authorization": "Bearer tok", "X-GitHub-Delivery": "d-1"}
	dup200(t, e.do(req{path: "/webhooks/plain", body: `{"a":1}`, headers: hd}), gid)
	gid2 := ok202(t, e.do(req{path: "/webhooks/plain", body: `{"a":2}`, headers: hd}))
	if gid2 != event.WebhookID("plain", "", []byte(`{"a":2}`)) {
		t.Fatalf("an unsigned delivery id was used: %s", gid2)
	}
	hd["X-GitHub-Delivery"] = "d-2"
	dup200(t, e.do(req{path: "/webhooks/plain", body: `{"a":2}`, headers: hd}), gid2)

	// Past JetStream's window and across a restart: still a duplicate.
	e.clock.Advance(24 * time.Hour)
	e.restart()
	dup200(t, e.do(req{body: body, secret: testSecret, msgID: "msg_a"}), id)
	dup200(t, e.do(req{path: "/webhooks/plain", body: `{"a":2}`, headers: hd}), gid2)
	// After seen_ttl the id is forgotten, but the status the poller
	// recorded meanwhile (it confirms every webhook-seen build) still stops
	// a second event.
	e.clock.Advance(72 * time.Hour)
	e.store.Update(context.Background(), func(tx *state.Tx) error {
		return tx.PutBuild("b1", state.BuildState{Status: "succeeded", ObservedBy: "poller"})
	})
	dup200(t, e.do(req{body: body, secret: testSecret, msgID: "msg_a"}), id)

	evs := e.stream()
	got := map[string]int{}
	for _, ev := range evs {
		got[ev.ID]++
	}
	if len(evs) != 4 || got[id] != 1 || got[gid] != 1 || got[gid2] != 1 || got[event.BuildStatusID("b3", "failed")] != 1 {
		t.Fatalf("stream: %v", got)
	}
	for _, ev := range evs {
		if ev.Type == "com.cakework.webhook.plain" && ((string(ev.Data) != `{"a":1}` && string(ev.Data) != `{"a":2}`) || ev.Subject != "plain") {
			t.Fatalf("generic event %+v", ev)
		}
	}
}

func TestAuth(t *testing.T) {
	cfg := trustConfig() // github (hmac), sw, tok, open
	tokCfg := defaultIngestConfig()
	tokCfg.Cakework = ingest.CakeworkConfig{Configured: true, Token: "cw-token"}
	e := newEnv(t, cfg)
	et := newEnv(t, tokCfg)
	n := 0
	body := func() string { n++; return fmt.Sprintf(`{"buildId":"b%d","imageId":"i"}`, n) }
	ghSig := func(b string) string {
		m := hmac.New(sha256.New, []byte("ghsecret"))
		m.Write([]byte(b))
		return "sha256=" + hex.EncodeToString(m.Sum(nil))
	}

	t.Run("signed", func(t *testing.T) { ok202(t, e.do(req{body: body(), secret: testSecret})) })
	t.Run("no signature", func(t *testing.T) {
		wantErr(t, e.do(req{body: body()}), 401, "webhook-signature")
	})
	t.Run("wrong secret", func(t *testing.T) {
		wantErr(t, e.do(req{body: body(), secret: otherSecret}), 401, "no webhook-signature matches")
	})
	t.Run("several signatures, one valid", func(t *testing.T) {
		b := body()
		good := sign(t, testSecret, "msg_multi", epoch, []byte(b)).Get("webhook-signature")
		bad := sign(t, otherSecret, "msg_multi", epoch, []byte(b)).Get("webhook-signature")
		ok202(t, e.do(req{body: b, msgID: "msg_multi", headers: map[string]string{
			"webhook-timestamp": fmt.Sprint(epoch.Unix()),
			"webhook-signature": "v2,abc " + bad + " " + good,
		}}))
	})
	t.Run("body changed after signing", func(t *testing.T) {
		h := sign(t, testSecret, "msg_t", epoch, []byte(`{"buildId":"x1","imageId":"i"}`))
		wantErr(t, e.do(req{body: `{"buildId":"x2","imageId":"i"}`, msgID: "msg_t", headers: map[string]string{
			"webhook-timestamp": h.Get("webhook-timestamp"), "webhook-signature": h.Get("webhook-signature"),
		}}), 401, "")
	})
	t.Run("stale timestamp", func(t *testing.T) {
		wantErr(t, e.do(req{body: body(), secret: testSecret, at: epoch.Add(-6 * time.Minute)}), 401, "webhook-timestamp")
	})
	t.Run("future timestamp", func(t *testing.T) {
		wantErr(t, e.do(req{body: body(), secret: testSecret, at: epoch.Add(6 * time.Minute)}), 401, "webhook-timestamp")
	})
	t.Run("timestamp within tolerance", func(t *testing.T) {
		ok202(t, e.do(req{body: body(), secret: testSecret, at: epoch.Add(-4 * time.Minute)}))
	})
	t.Run("garbage timestamp", func(t *testing.T) {
		wantErr(t, e.do(req{body: body(), msgID: "m", headers: map[string]string{"webhook-timestamp": "yesterday", "webhook-signature": "v1,AAAA"}}), 401, "unix seconds")
	})
	t.Run("token bearer", func(t *testing.T) {
		ok202(t, et.do(req{body: body(), headers: map[string]string{"Authorization": "Bearer cw-token"}}))
	})
	t.Run("token query", func(t *testing.T) {
		ok202(t, et.do(req{path: "/webhooks/cakework?token=cw-token", body: body()}))
		ok202(t, et.do(req{path: "/webhooks/cakework/build/failed?token=cw-token", body: `{"buildId":"q1"}`}))
	})
	t.Run("wrong token", func(t *testing.T) {
		wantErr(t, et.do(req{body: body(), headers: map[string]string{"Authorization": "Bearer nope"}}), 401, "token")
		wantErr(t, et.do(req{path: "/webhooks/cakework?token=nope", body: body()}), 401, "token")
		wantErr(t, et.do(req{body: body()}), 401, "token")
	})
	t.Run("github hmac", func(t *testing.T) {
		b := `{"action":"opened"}`
		ok202(t, e.do(req{path: "/webhooks/github", body: b, headers: map[string]string{"X-Hub-Signature-256": ghSig(b), "X-GitHub-Delivery": "g1"}}))
		wantErr(t, e.do(req{path: "/webhooks/github", body: b, headers: map[string]string{"X-Hub-Signature-256": ghSig(b + " ")}}), 401, "X-Hub-Signature-256")
		wantErr(t, e.do(req{path: "/webhooks/github", body: b, headers: map[string]string{"X-Hub-Signature-256": strings.TrimPrefix(ghSig(b), "sha256=")}}), 401, "")
		wantErr(t, e.do(req{path: "/webhooks/github", body: b}), 401, "missing X-Hub-Signature-256")
	})
	t.Run("generic standard webhooks", func(t *testing.T) {
		ok202(t, e.do(req{path: "/webhooks/sw", body: `{"x":1}`, secret: otherSecret}))
		wantErr(t, e.do(req{path: "/webhooks/sw", body: `{"x":2}`, secret: testSecret}), 401, "ingest.webhooks[1] (sw).secret")
	})
	t.Run("generic token", func(t *testing.T) {
		ok202(t, e.do(req{path: "/webhooks/tok?token=s3cret-token", body: `{"x":1}`}))
		wantErr(t, e.do(req{path: "/webhooks/tok", body: `{"x":1}`}), 401, "")
	})
	t.Run("insecure_no_auth", func(t *testing.T) {
		ok202(t, e.do(req{path: "/webhooks/open", body: `[1,2]`}))
	})
	t.Run("no secret in any error", func(t *testing.T) {
		for _, r := range []resp{
			e.do(req{body: body(), secret: otherSecret}),
			e.do(req{path: "/webhooks/github", body: `{}`, headers: map[string]string{"X-Hub-Signature-256": "sha256=00"}}),
			et.do(req{body: body(), headers: map[string]string{"Authorization": "Bearer x"}}),
		} {
			for _, s := range []string{"MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "ghsecret", "cw-token", "s3cret"} {
				if strings.Contains(r.raw, s) {
					t.Fatalf("secret in error: %s", r.raw)
				}
			}
		}
	})
	// Rejected requests published nothing: 7 accepted on e, 3 on et.
	if got := len(e.stream()); got != 7 {
		t.Fatalf("%d events from the signed receiver env, want 7", got)
	}
	if got := len(et.stream()); got != 3 {
		t.Fatalf("%d events from the token env, want 3", got)
	}
}

func TestEveryErrorAnswer(t *testing.T) {
	cfg := defaultIngestConfig()
	cfg.Webhooks = []ingest.WebhookConfig{{Name: "gen", InsecureNoAuth: true}}
	e := newEnv(t, cfg)
	signed := func(path, body string) resp { return e.do(req{path: path, body: body, secret: testSecret}) }
	tests := []struct {
		name     string
		r        resp
		status   int
		contains string
	}{
		{"malformed json", signed("", `{"buildId":`), 400, "JSON"},
		{"not an object", signed("", `[1]`), 400, "object"},
		{"wrong type", signed("", `{"buildId":5}`), 400, "buildId must be a string"},
		{"empty body", signed("", ``), 400, "empty"},
		{"missing buildId", signed("", `{"imageId":"x"}`), 400, "buildId is missing"},
		{"bad buildId", signed("", `{"buildId":"a.b","imageId":"x"}`), 400, "buildId"},
		{"long buildId", signed("", `{"buildId":"`+strings.Repeat("x", 129)+`","imageId":"x"}`), 400, "1-128"},
		{"wildcard buildId", signed("", `{"buildId":">","status":"failed"}`), 400, "buildId"},
		{"unknown status", signed("", `{"buildId":"b","status":"exploded"}`), 400, "unknown build status"},
		{"unknown type", signed("", `{"type":"vm.started","buildId":"b"}`), 400, "not a build webhook"},
		{"no status at all", signed("", `{"buildId":"b"}`), 400, "/build/failed"},
		{"status disagrees with path", signed("/webhooks/cakework/build/failed", `{"buildId":"b","status":"succeeded"}`), 400, "URL path"},
		{"type disagrees with status", signed("", `{"type":"build.failed","buildId":"b","status":"succeeded"}`), 400, "type"},
		{"bad timestamp", signed("", `{"buildId":"b","status":"failed","updatedAt":"last tuesday"}`), 400, "timestamp"},
		{"generic not json", e.do(req{path: "/webhooks/gen", body: `{nope`}), 400, "not valid JSON"},
		{"long delivery id", e.do(req{path: "/webhooks/gen", body: `{}`, headers: map[string]string{"Idempotency-Key": strings.Repeat("k", 300)}}), 400, "Idempotency-Key"},
		{"text/plain", e.do(req{body: `{"buildId":"b","imageId":"i"}`, ct: "text/plain", secret: testSecret}), 415, "application/json"},
		{"form", e.do(req{body: `a=b`, ct: "application/x-www-form-urlencoded", secret: testSecret}), 415, ""},
		{"json-ish but not", e.do(req{body: `{}`, ct: "application/jsonp", secret: testSecret}), 415, ""},
		{"too large", signed("", `{"buildId":"b","imageId":"`+strings.Repeat("x", 5000)+`"}`), 413, "max_body_bytes"},
		{"unknown receiver", e.do(req{path: "/webhooks/nobody", body: `{}`}), 401, "ingest.webhooks"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { wantErr(t, tt.r, tt.status, tt.contains) })
	}
	t.Run("json content types", func(t *testing.T) {
		for i, ct := range []string{"application/json; charset=utf-8", "Application/JSON", "application/cloudevents+json", "application/vnd.cakework+json ; v=1", "-"} {
			ok202(t, e.do(req{body: fmt.Sprintf(`{"buildId":"ct%d","imageId":"i"}`, i), ct: ct, secret: testSecret}))
		}
	})
	t.Run("chunked too large", func(t *testing.T) {
		// No Content-Length: the limit holds while reading.
		body := `{"buildId":"b","imageId":"` + strings.Repeat("x", 5000) + `"}`
		hr, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/webhooks/gen", chunkedBody(body))
		hr.ContentLength = -1
		res, err := http.DefaultClient.Do(hr)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != 413 {
			t.Fatalf("status %d", res.StatusCode)
		}
	})
	t.Run("method", func(t *testing.T) {
		res, err := http.Get(e.srv.URL + "/webhooks/cakework")
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != 405 {
			t.Fatalf("GET: %d", res.StatusCode)
		}
	})
	if got := len(e.stream()); got != 5 {
		t.Fatalf("%d events, want only the 5 accepted", got)
	}
}

func TestUnavailableAnswers503WithRetryAfter(t *testing.T) {
	t.Run("receiver off", func(t *testing.T) {
		cfg := defaultIngestConfig()
		cfg.Cakework = ingest.CakeworkConfig{}
		cfg.Webhooks = []ingest.WebhookConfig{{Name: "gen", InsecureNoAuth: true}}
		e := newEnv(t, cfg)
		for _, p := range []string{"/webhooks/cakework", "/webhooks/cakework/build/succeeded", "/webhooks/cakework/build/failed"} {
			r := e.do(req{path: p, body: `{"buildId":"b","imageId":"i"}`, secret: testSecret})
			wantErr(t, r, 503, "the Cakework webhook receiver is off: set CAKEWORK_WEBHOOK_SECRET or ingest.cakework.secret")
			if r.retryAfter == "" {
				t.Error("no Retry-After")
			}
		}
		// The rest runs.
		ok202(t, e.do(req{path: "/webhooks/gen", body: `{}`}))
	})
	t.Run("outbox full", func(t *testing.T) {
		cfg := defaultIngestConfig()
		cfg.OutboxLimit = 2
		e := newEnv(t, cfg)
		ok202(t, e.do(req{body: `{"buildId":"b1","imageId":"i"}`, secret: testSecret}))
		ok202(t, e.do(req{body: `{"buildId":"b2","imageId":"i"}`, secret: testSecret}))
		r := e.do(req{body: `{"buildId":"b3","imageId":"i"}`, secret: testSecret})
		// The caller, not yet authenticated, learns nothing of the state;
		// the operator's log says what is wrong.
		wantErr(t, r, 503, "retry later")
		if !strings.Contains(r.log, "outbox is full") {
			t.Errorf("log %q", r.log)
		}
		if r.retryAfter != "5" {
			t.Fatalf("Retry-After %q", r.retryAfter)
		}
		// Once the bus drains it, ingest accepts again.
		e.publish()
		ok202(t, e.do(req{body: `{"buildId":"b3","imageId":"i"}`, secret: testSecret}))
	})
	t.Run("state closed", func(t *testing.T) {
		e := newEnv(t, defaultIngestConfig())
		e.store.Close()
		r := e.do(req{body: `{"buildId":"b1","imageId":"i"}`, secret: testSecret})
		wantErr(t, r, 503, "retry later")
		if strings.Contains(r.raw, e.dir) || strings.Contains(r.raw, "state") {
			t.Errorf("a 503 before auth tells about the state: %s", r.raw)
		}
		if r.retryAfter == "" {
			t.Fatal("no Retry-After")
		}
	})
}

func TestNewRefusesReceiversWithoutAuth(t *testing.T) {
	st, err := state.Open(state.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	tests := []struct {
		name string
		cfg  ingest.Config
		want string
	}{
		{"cakework block without auth", ingest.Config{Cakework: ingest.CakeworkConfig{Configured: true}}, "ingest.cakework: no auth"},
		{"generic without auth", ingest.Config{Webhooks: []ingest.WebhookConfig{{Name: "ok", Token: "t"}, {Name: "github"}}}, "ingest.webhooks[1] (github): no auth"},
		{"bad secret", ingest.Config{Cakework: ingest.CakeworkConfig{Configured: true, Secret: "nope"}}, "ingest.cakework.secret"},
		{"bad name", ingest.Config{Webhooks: []ingest.WebhookConfig{{Name: "Git.Hub", Token: "t"}}}, `ingest.webhooks[0].name: "Git.Hub" is not a receiver name`},
		{"bad algorithm", ingest.Config{Webhooks: []ingest.WebhookConfig{{Name: "g", HMAC: &ingest.HMACConfig{Header: "X-Sig", Secret: "s", Algorithm: "md5"}}}}, "md5"},
	}
	for _, tt := range tests {
		_, err := ingest.New(ingest.Options{Config: tt.cfg, Store: st})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: got %v, want %q", tt.name, err, tt.want)
		}
	}
	// Configured with insecure_no_auth, or not configured at all: starts.
	for _, c := range []ingest.CakeworkConfig{{Configured: true, InsecureNoAuth: true}, {}} {
		if _, err := ingest.New(ingest.Options{Config: ingest.Config{Cakework: c}, Store: st}); err != nil {
			t.Errorf("%+v: %v", c, err)
		}
	}
}

// TestConcurrentWebhooksAreOnTheStreamOnce sends many webhooks at once, each
// delivered twice (the second concurrently with the first), with the outbox
// publisher running.
func TestConcurrentWebhooksAreOnTheStreamOnce(t *testing.T) {
	e := newEnv(t, defaultIngestConfig())
	e.publish()
	const builds = 200
	var wg sync.WaitGroup
	var mu sync.Mutex
	accepted := map[string]int{}
	duplicates := 0
	for i := 0; i < builds; i++ {
		for copy := 0; copy < 2; copy++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := doReq(t, e.srv.URL, req{body: fmt.Sprintf(`{"buildId":"b%d","imageId":"i"}`, i), secret: testSecret, msgID: fmt.Sprintf("m%d", i)}, epoch)
				mu.Lock()
				defer mu.Unlock()
				switch r.status {
				case 202:
					accepted[r.body["id"].(string)]++
				case 200:
					duplicates++
				default:
					t.Errorf("status %d %s", r.status, r.raw)
				}
			}()
		}
	}
	wg.Wait()
	if len(accepted) != builds || duplicates != builds {
		t.Fatalf("%d accepted, %d duplicates", len(accepted), duplicates)
	}
	evs := e.stream()
	seen := map[string]bool{}
	for _, ev := range evs {
		if seen[ev.ID] || accepted[ev.ID] != 1 {
			t.Fatalf("event %s twice or never accepted", ev.ID)
		}
		seen[ev.ID] = true
	}
	if len(evs) != builds {
		t.Fatalf("%d events, want %d", len(evs), builds)
	}
}

func TestMetrics(t *testing.T) {
	e := newEnv(t, defaultIngestConfig())
	ok202(t, e.do(req{body: `{"buildId":"b1","imageId":"i"}`, secret: testSecret, msgID: "m"}))
	e.do(req{body: `{"buildId":"b1","imageId":"i"}`, secret: testSecret, msgID: "m"})
	e.do(req{body: `{"buildId":"b1","imageId":"i"}`})
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	var hist *dto.Histogram
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			switch mf.GetName() {
			case "relay_ingest_requests_total":
				got[labels["receiver"]+"/"+labels["outcome"]] = m.GetCounter().GetValue()
			case "relay_ingest_request_duration_seconds":
				if labels["receiver"] == "cakework" {
					hist = m.GetHistogram()
				}
			}
		}
	}
	if got["cakework/accepted"] != 1 || got["cakework/duplicate"] != 1 || got["cakework/unauthorized"] != 1 {
		t.Fatalf("counters %v", got)
	}
	if hist == nil || hist.GetSampleCount() != 3 {
		t.Fatalf("histogram %v", hist)
	}
}

// Without a poller nothing would empty the watch queue, so ingest queues no
// watch; the event itself is accepted as usual.
func TestNoWatchQueuedWithoutAPoller(t *testing.T) {
	e := &env{t: t, dir: t.TempDir(), cfg: defaultIngestConfig(), max: 4096, clock: clock.NewFake(epoch), noPoller: true}
	e.open()
	ok202(t, e.do(req{body: `{"buildId":"b1","imageId":"img"}`, secret: testSecret}))
	n, err := e.store.ApplyWatchQueue(context.Background())
	if err != nil || n != 0 {
		t.Fatalf("%d watches were queued without a poller (%v)", n, err)
	}
	if evs := e.stream(); len(evs) != 1 {
		t.Fatalf("%d events on the stream, want 1", len(evs))
	}
}

// A repeated webhook-id is answered with the id of the event published for
// its first delivery, even when the repeat's body differs (and would make
// another id); the repeat publishes nothing, also after a restart. An id
// remembered without its event (recorded before events were kept with
// ids) is a duplicate with no id.
func TestDuplicateDeliveryAnswersTheFirstEvent(t *testing.T) {
	e := newEnv(t, defaultIngestConfig())
	first := ok202(t, e.do(req{body: `{"buildId":"b1","imageId":"img"}`, secret: testSecret, msgID: "msg_x"}))
	if first != event.BuildStatusID("b1", "succeeded") {
		t.Fatalf("first id %s", first)
	}
	other := `{"buildId":"b2","status":"failed"}`
	dup200(t, e.do(req{body: other, secret: testSecret, msgID: "msg_x"}), first)
	dup200(t, e.do(req{path: "/webhooks/cakework/build/failed", body: `{"buildId":"b1"}`, secret: testSecret, msgID: "msg_x"}), first)
	e.restart()
	dup200(t, e.do(req{body: other, secret: testSecret, msgID: "msg_x"}), first)

	// As a relay before this change left it: the id without its event.
	if err := e.store.Accept(context.Background(), func(tx *state.AcceptTx) error {
		_, err := tx.SeenWebhook(ingest.CakeworkReceiver, "d:msg_old", e.clock.Now(), e.clock.Now().Add(time.Hour))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	r := e.do(req{body: other, secret: testSecret, msgID: "msg_old"})
	if r.status != http.StatusOK || r.raw != "{\"duplicate\":true}\n" {
		t.Fatalf("repeat of an id remembered without its event: %d %q, want 200 {\"duplicate\":true}", r.status, r.raw)
	}

	evs := e.stream()
	if len(evs) != 1 || evs[0].ID != first {
		t.Fatalf("stream holds %d events (%v), want only %s", len(evs), evs, first)
	}
}
