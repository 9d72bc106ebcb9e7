package ingest_test

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/cakework-relay/cakework-relay/internal/clock"
	"github.com/cakework-relay/cakework-relay/internal/httpapi"
	"github.com/cakework-relay/cakework-relay/internal/ingest"
	"github.com/cakework-relay/cakework-relay/internal/state"
)

var fuzzPaths = []string{
	"/webhooks/cakework",
	"/webhooks/cakework/build/succeeded",
	"/webhooks/cakework/build/failed",
	"/webhooks/github",
	"/webhooks/tok?token=fuzz-token",
	"/webhooks/open",
	"/webhooks/nobody",
	"/webhooks/cakework?token=x",
}

// FuzzHandler feeds arbitrary bodies and headers, some correctly signed so
// the fuzzer reaches the parser, to the handler. It must never panic, must
// only give documented answers, and must enqueue exactly one event for a 202
// and none for anything else.
func FuzzHandler(f *testing.F) {
	type seed struct {
		path     uint8
		ct       string
		sign     uint8
		msgID    string
		tsOff    int64
		sigHdr   string
		authHdr  string
		body     []byte
		deliverH string
	}
	for _, s := range []seed{
		{0, "application/json", 1, "msg_1", 0, "", "", []byte(`{"buildId":"b1","imageId":"i"}`), ""},
		{0, "application/json", 1, "msg_2", 0, "", "", []byte(`{"buildId":"b2","status":"failed","updatedAt":"2023-03-07 06:12:56 UTC"}`), ""},
		{0, "", 1, "msg_3", 0, "", "", []byte(`{"type":"build.succeeded","data":{"buildId":"b3","imageId":"x","createdAt":1676625938460}}`), ""},
		{1, "application/json", 1, "msg_4", 0, "", "", []byte(`{"buildId":"b4","imageId":"i"}`), ""},
		{2, "application/json", 1, "msg_5", 0, "", "", []byte(`{"buildId":"b5"}`), ""},
		{0, "application/json", 1, "msg_6", 0, "", "", []byte(`{"buildId":"a.b","imageId":"i"}`), ""},
		{0, "application/json", 1, "msg_7", 0, "", "", []byte(`{"buildId":"b","status":"weird"}`), ""},
		{0, "application/json", 1, "msg_8", -1000, "", "", []byte(`{"buildId":"b8","imageId":"i"}`), ""},
		{0, "application/json", 0, "msg_9", 0, "v1,AAAA v1,", "", []byte(`{"buildId":"b9","imageId":"i"}`), ""},
		{0, "text/plain", 1, "msg_10", 0, "", "", []byte(`{"buildId":"b10","imageId":"i"}`), ""},
		{0, "application/json", 1, "msg_11", 0, "", "", []byte(`{"buildId":`), ""},
		{0, "application/json", 1, "", 0, "", "", []byte(`[]`), ""},
		{3, "application/json", 2, "", 0, "", "", []byte(`{"action":"opened"}`), "gh-1"},
		{3, "application/json", 0, "", 0, "sha256=00", "", []byte(`{"action":"opened"}`), ""},
		{4, "application/json", 0, "", 0, "", "", []byte(`{"x":[1,2,3]}`), ""},
		{5, "application/cloudevents+json", 0, "", 0, "", "", []byte(`"just a string"`), ""},
		{5, "application/json", 0, "", 0, "", "", []byte(`{"x":1}garbage`), ""},
		{6, "application/json", 0, "", 0, "", "", []byte(`{}`), ""},
		{7, "application/json", 0, "", 0, "", "Bearer x", []byte(`{}`), ""},
		{0, "application/json", 1, "msg_12", 0, "", "", bytes.Repeat([]byte("x"), 5000), ""},
		{0, "application/json", 1, "msg_13", 0, "", "", []byte(`{"buildId":"b13","status":"succeeded","updatedAt":"99999999999999999999"}`), ""},
	} {
		f.Add(s.path, s.ct, s.sign, s.msgID, s.tsOff, s.sigHdr, s.authHdr, s.body, s.deliverH)
	}

	st, err := state.Open(state.Options{Dir: f.TempDir()})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { st.Close() })
	cfg := defaultIngestConfig()
	cfg.Webhooks = []ingest.WebhookConfig{
		{Name: "github", HMAC: &ingest.HMACConfig{Header: "X-Hub-Signature-256", Prefix: "sha256=", Algorithm: "sha256", Secret: "ghsecret"}},
		{Name: "tok", Token: "fuzz-token"},
		{Name: "open", InsecureNoAuth: true},
	}
	in, err := ingest.New(ingest.Options{Config: cfg, MaxBodyBytes: 4096, Store: st, Clock: clock.NewFake(epoch)})
	if err != nil {
		f.Fatal(err)
	}
	// The server the relay runs, with its exact-route fast path.
	r := httpapi.New(httpapi.Options{MaxBodyBytes: 4096})
	in.Mount(r)
	wh, _ := standardwebhooks.NewWebhook(testSecret)
	allowed := map[int]bool{200: true, 202: true, 400: true, 401: true, 404: true, 413: true, 415: true, 503: true}

	f.Fuzz(func(t *testing.T, path uint8, ct string, signMode uint8, msgID string, tsOff int64, sigHdr, authHdr string, body []byte, deliveryHdr string) {
		req := httptest.NewRequest(http.MethodPost, fuzzPaths[int(path)%len(fuzzPaths)], bytes.NewReader(body))
		if ct != "" {
			req.Header.Set("Content-Type", ct)
		}
		ts := epoch.Add(time.Duration(tsOff%100000) * time.Second)
		if msgID != "" {
			req.Header.Set("webhook-id", msgID)
		}
		req.Header.Set("webhook-timestamp", strconv.FormatInt(ts.Unix(), 10))
		switch signMode % 3 {
		case 1: // a real Standard Webhooks signature, plus whatever the fuzzer adds
			sig, _ := wh.Sign(msgID, ts, body)
			req.Header.Set("webhook-signature", sig+" "+sigHdr)
		case 2: // a real GitHub-style HMAC
			m := hmac.New(sha256.New, []byte("ghsecret"))
			m.Write(body)
			req.Header.Set("X-Hub-Signature-256", "sha256="+hex.EncodeToString(m.Sum(nil)))
		default:
			req.Header.Set("webhook-signature", sigHdr)
			req.Header.Set("X-Hub-Signature-256", sigHdr)
		}
		if authHdr != "" {
			req.Header.Set("Authorization", authHdr)
		}
		if deliveryHdr != "" {
			req.Header.Set("X-GitHub-Delivery", deliveryHdr)
		}
		before := st.OutboxDepth()
		w := httptest.NewRecorder()
		r.ServeHTTP(w, req)
		after := st.OutboxDepth()

		if !allowed[w.Code] {
			t.Fatalf("undocumented answer %d: %s", w.Code, w.Body)
		}
		var ans map[string]any
		if err := json.Unmarshal(w.Body.Bytes(), &ans); err != nil {
			t.Fatalf("answer %d is not JSON: %q", w.Code, w.Body)
		}
		switch w.Code {
		case 202:
			if after != before+1 {
				t.Fatalf("202 enqueued %d events", after-before)
			}
			if id, _ := ans["id"].(string); id == "" {
				t.Fatalf("202 without id: %s", w.Body)
			}
		case 200:
			if after != before || ans["duplicate"] != true {
				t.Fatalf("duplicate enqueued %d events: %s", after-before, w.Body)
			}
		default:
			if after != before {
				t.Fatalf("rejected with %d but enqueued %d events: %s", w.Code, after-before, w.Body)
			}
			if msg, _ := ans["error"].(string); msg == "" {
				t.Fatalf("error answer %d without error: %s", w.Code, w.Body)
			}
		}
	})
}
