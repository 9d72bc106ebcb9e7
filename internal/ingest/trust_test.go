package ingest_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"strings"
	"testing"

	"github.com/cakework-relay/cakework-relay/internal/ingest"
)

func trustConfig() ingest.Config {
	cfg := defaultIngestConfig()
	cfg.Webhooks = []ingest.WebhookConfig{
		{Name: "github", HMAC: &ingest.HMACConfig{Header: "X-Hub-Signature-256", Prefix: "sha256=", Algorithm: "sha256", Secret: "ghsecret"}},
		{Name: "sw", Secret: otherSecret},
		{Name: "tok", Token: "s3cret-token"},
		{Name: "open", InsecureNoAuth: true},
	}
	return cfg
}

func ghSignature(body string) string {
	m := hmac.New(sha256.New, []byte("ghsecret"))
	m.Write([]byte(body))
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// The replay rule: a delivery id counts only when the receiver's auth signs
// it (Standard Webhooks' webhook-id). Behind a body HMAC or a token, a
// request replayed with a new delivery id is a duplicate for seen_ttl (the
// body identifies it); without auth, the sender's delivery id is taken as
// given (nothing there stops a forger anyway).
func TestReplayWithANewDeliveryID(t *testing.T) {
	e := newEnv(t, trustConfig())
	body := `{"action":"opened","n":1}`
	for _, tc := range []struct {
		receiver string
		header   string // the delivery id header the sender uses
		auth     func(r *req, deliveryID string)
		second   int // the answer to the same body with a new delivery id
	}{
		{"github", "X-GitHub-Delivery", func(r *req, _ string) { r.headers["X-Hub-Signature-256"] = ghSignature(r.body) }, http.StatusOK},
		{"github", "Idempotency-Key", func(r *req, _ string) { r.headers["X-Hub-Signature-256"] = ghSignature(r.body) }, http.StatusOK},
		{"tok", "X-GitHub-Delivery", func(r *req, _ string) { r.headers["Authorization"] = "Bearer s3cret-token" }, http.StatusOK},
		{"tok", "X-Gitlab-Event-Uuid", func(r *req, _ string) { r.headers["Authorization"] = "Bearer s3cret-token" }, http.StatusOK},
		// Standard Webhooks signs webhook-id: a new id needs the secret, so
		// it is a new delivery.
		{"sw", "", func(r *req, id string) { r.secret, r.msgID = otherSecret, id }, http.StatusAccepted},
		{"open", "X-GitHub-Delivery", func(*req, string) {}, http.StatusAccepted},
	} {
		t.Run(tc.receiver+" "+tc.header, func(t *testing.T) {
			send := func(deliveryID string) resp {
				r := req{path: "/webhooks/" + tc.receiver, body: body, headers: map[string]string{}}
				if tc.header != "" {
					r.headers[tc.header] = deliveryID
				}
				tc.auth(&r, deliveryID)
				return e.do(r)
			}
			first := send(tc.receiver + tc.header + "-1")
			if first.status != http.StatusAccepted && first.status != http.StatusOK {
				t.Fatalf("first delivery: %d %s", first.status, first.raw)
			}
			if r := send(tc.receiver + tc.header + "-2"); r.status != tc.second {
				t.Fatalf("replay with a new delivery id: %d %s, want %d", r.status, r.raw, tc.second)
			}
		})
	}
	// A different body behind the HMAC is a new event.
	b2 := `{"action":"closed"}`
	ok202(t, e.do(req{path: "/webhooks/github", body: b2, headers: map[string]string{"X-Hub-Signature-256": ghSignature(b2), "X-GitHub-Delivery": "x"}}))
}

// FuzzReplayRule: whatever delivery id a replay of an HMAC-signed body
// carries, it publishes nothing new.
func FuzzReplayRule(f *testing.F) {
	f.Add("d-1", "d-2", "X-GitHub-Delivery")
	f.Add("", "other", "Idempotency-Key")
	f.Add("a", "a", "X-Gitlab-Event-Uuid")
	f.Fuzz(func(t *testing.T, id1, id2, header string) {
		if len(id1) > 200 || len(id2) > 200 || strings.ContainsAny(id1+id2, "\r\n\x00") || !strings.Contains("X-GitHub-Delivery Idempotency-Key X-Gitlab-Event-Uuid webhook-id", header) || header == "" {
			t.Skip()
		}
		e := newEnv(t, trustConfig())
		body := `{"x":1}`
		send := func(id string) int {
			r := req{path: "/webhooks/github", body: body, headers: map[string]string{"X-Hub-Signature-256": ghSignature(body)}}
			if id != "" {
				r.headers[header] = id
			}
			return e.do(r).status
		}
		if s := send(id1); s != http.StatusAccepted {
			t.Skipf("first answer %d", s)
		}
		if s := send(id2); s != http.StatusOK && s != http.StatusBadRequest {
			t.Fatalf("replay with delivery id %q answered %d", id2, s)
		}
		if n := len(e.stream()); n != 1 {
			t.Fatalf("%d events on the stream, want 1", n)
		}
	})
}

// Before auth, a known receiver and an unknown name answer alike, and no
// answer tells about the relay's state.
func TestUnauthenticatedAnswersSayNothing(t *testing.T) {
	e := newEnv(t, trustConfig())
	big := `{"x":"` + strings.Repeat("x", 5000) + `"}`
	for _, tc := range []struct {
		name string
		r    req
	}{
		{"no auth", req{body: `{}`}},
		{"wrong signature", req{body: `{}`, headers: map[string]string{"X-Hub-Signature-256": ghSignature(`{"other":1}`)}}},
		{"wrong token", req{body: `{}`, headers: map[string]string{"Authorization": "Bearer guess"}}},
		{"not JSON", req{body: `{}`, ct: "text/plain"}},
		{"too large", req{body: big}},
	} {
		known, unknown := tc.r, tc.r
		known.path, unknown.path = "/webhooks/github", "/webhooks/no-such-receiver"
		a, b := e.do(known), e.do(unknown)
		if a.status != b.status || a.raw != b.raw || a.retryAfter != b.retryAfter {
			t.Errorf("%s: known receiver %d %s, unknown %d %s", tc.name, a.status, a.raw, b.status, b.raw)
		}
	}
	// The state store fails: the same generic 503 for both, with no path.
	e.store.Close()
	a := e.do(req{path: "/webhooks/github", body: `{}`})
	b := e.do(req{path: "/webhooks/no-such-receiver", body: `{}`})
	if a.status != http.StatusServiceUnavailable || a.raw != b.raw || a.retryAfter != b.retryAfter {
		t.Errorf("store closed: known %d %s, unknown %d %s", a.status, a.raw, b.status, b.raw)
	}
	if strings.Contains(a.raw, e.dir) || strings.Contains(a.raw, "journal") || strings.Contains(a.raw, "disk") {
		t.Errorf("a 503 before auth tells about the state: %s", a.raw)
	}
}
