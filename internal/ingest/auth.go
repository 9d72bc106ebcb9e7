package ingest

import (
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"hash"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Standard Webhooks headers, in canonical form so lookups skip
// canonicalization (and its allocation) on the hot path.
const (
	hdrWebhookID        = "Webhook-Id"
	hdrWebhookTimestamp = "Webhook-Timestamp"
	hdrWebhookSignature = "Webhook-Signature"
	hdrAuthorization    = "Authorization"
	hdrContentType      = "Content-Type"
)

// maxDeliveryID bounds a sender's delivery id; it becomes a bbolt key.
const maxDeliveryID = 256

// hget reads a header by its canonical name without canonicalizing again.
func hget(h http.Header, canonical string) string {
	if v := h[canonical]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// auth is how one receiver checks a request. Any configured method that
// passes is enough; with none configured the receiver runs without auth
// (insecure_no_auth).
type auth struct {
	label string // config path, for messages

	sw        *macPool // Standard Webhooks (HMAC-SHA256 over id.ts.body)
	tolerance time.Duration
	token     []byte

	hmac       *macPool // generic HMAC over the body
	hmacHeader string   // canonical
	hmacPrefix string
}

// macPool hands out keyed HMAC states with scratch space, so verifying a
// signature allocates nothing.
type macPool struct{ p sync.Pool }

type macState struct {
	mac     hash.Hash
	scratch []byte
	sum     []byte
	sig     []byte
}

func newMacPool(h func() hash.Hash, key []byte) *macPool {
	mp := &macPool{}
	mp.p.New = func() any {
		m := hmac.New(h, key)
		return &macState{mac: m, scratch: make([]byte, 0, 128), sum: make([]byte, 0, m.Size()), sig: make([]byte, 0, 128)}
	}
	return mp
}

func (mp *macPool) get() *macState { return mp.p.Get().(*macState) }
func (mp *macPool) put(s *macState) {
	s.mac.Reset()
	mp.p.Put(s)
}

func newAuth(label, secret, token string, h *HMACConfig, tolerance time.Duration) (*auth, error) {
	a := &auth{label: label, tolerance: tolerance}
	if a.tolerance <= 0 {
		a.tolerance = 5 * time.Minute
	}
	if secret != "" {
		b64, ok := strings.CutPrefix(secret, "whsec_")
		key, err := base64.StdEncoding.DecodeString(b64)
		if !ok || err != nil || len(key) == 0 {
			return nil, fmt.Errorf("%s.secret: not a Standard Webhooks secret; it must be whsec_ followed by base64", label)
		}
		a.sw = newMacPool(sha256.New, key)
	}
	if token != "" {
		a.token = []byte(token)
	}
	if h != nil {
		var fn func() hash.Hash
		switch strings.ToLower(h.Algorithm) {
		case "", "sha256":
			fn = sha256.New
		case "sha1":
			fn = sha1.New
		case "sha512":
			fn = sha512.New
		default:
			return nil, fmt.Errorf("%s.hmac.algorithm: %q is not supported; use sha256, sha1 or sha512", label, h.Algorithm)
		}
		if h.Header == "" || h.Secret == "" {
			return nil, fmt.Errorf("%s.hmac: header and secret are required", label)
		}
		a.hmac = newMacPool(fn, []byte(h.Secret))
		a.hmacHeader = textproto.CanonicalMIMEHeaderKey(h.Header)
		a.hmacPrefix = h.Prefix
	}
	return a, nil
}

func (a *auth) none() bool { return a.sw == nil && a.token == nil && a.hmac == nil }

// check authenticates r with body. It returns "" or a message for a 401
// that says what is wrong and how to fix it, never a secret; and whether
// the method that passed signs the delivery id (Standard Webhooks signs
// webhook-id; a body HMAC and a token sign none, so a delivery id beside
// them proves nothing).
func (a *auth) check(r *http.Request, body []byte, now time.Time) (msg string, signedID bool) {
	if a.none() {
		return "", false
	}
	var msgs []string
	if a.sw != nil {
		err := a.checkStandard(r.Header, body, now)
		if err == "" {
			return "", true
		}
		msgs = append(msgs, err)
	}
	if a.hmac != nil {
		err := a.checkHMAC(r.Header, body)
		if err == "" {
			return "", false
		}
		msgs = append(msgs, err)
	}
	if a.token != nil {
		if a.checkToken(r) {
			return "", false
		}
		msgs = append(msgs, "missing or wrong token: send Authorization: Bearer <"+a.label+".token> or ?token=")
	}
	return strings.Join(msgs, "; or "), false
}

// precheck is the part of check that needs no body: a request none of
// whose configured methods can pass (Standard Webhooks headers missing or
// the timestamp out of tolerance, no HMAC header, a wrong token) is refused
// before its body is read. "" means the full check must decide.
func (a *auth) precheck(r *http.Request, now time.Time) string {
	if a.none() {
		return ""
	}
	var msgs []string
	if a.sw != nil {
		if _, _, _, msg := a.standardHeaders(r.Header, now); msg == "" {
			return ""
		} else {
			msgs = append(msgs, msg)
		}
	}
	if a.hmac != nil {
		if hget(r.Header, a.hmacHeader) != "" {
			return ""
		}
		msgs = append(msgs, "missing "+a.hmacHeader+" header: send "+a.hmacPrefix+"<hex HMAC of the body with "+a.label+".hmac.secret>")
	}
	if a.token != nil {
		if a.checkToken(r) {
			return ""
		}
		msgs = append(msgs, "missing or wrong token: send Authorization: Bearer <"+a.label+".token> or ?token=")
	}
	return strings.Join(msgs, "; or ")
}

// standardHeaders reads the Standard Webhooks headers and checks the
// timestamp's tolerance; msg says what is wrong.
func (a *auth) standardHeaders(h http.Header, now time.Time) (id, ts, sigs, msg string) {
	id, ts, sigs = hget(h, hdrWebhookID), hget(h, hdrWebhookTimestamp), hget(h, hdrWebhookSignature)
	if id == "" || ts == "" || sigs == "" {
		return "", "", "", "missing webhook-id, webhook-timestamp or webhook-signature header: sign the request per Standard Webhooks with " + a.label + ".secret"
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return "", "", "", "webhook-timestamp is not unix seconds: send the signing time as an integer"
	}
	skew := now.Sub(time.Unix(sec, 0))
	if skew > a.tolerance || skew < -a.tolerance {
		return "", "", "", fmt.Sprintf("webhook-timestamp %d is %s away from the relay's clock (tolerance %s): sign with the current time, check the sender's clock, and do not replay old requests",
			sec, skew.Abs().Round(time.Second), a.tolerance)
	}
	return id, ts, sigs, ""
}

func (a *auth) checkStandard(h http.Header, body []byte, now time.Time) string {
	id, ts, sigs, msg := a.standardHeaders(h, now)
	if msg != "" {
		return msg
	}
	st := a.sw.get()
	defer a.sw.put(st)
	// Signed content: "<id>.<timestamp>.<body>".
	st.scratch = append(append(append(append(st.scratch[:0], id...), '.'), ts...), '.')
	st.mac.Write(st.scratch)
	st.mac.Write(body)
	st.sum = st.mac.Sum(st.sum[:0])
	ok := false
	for rest := sigs; rest != "" && !ok; {
		var one string
		one, rest, _ = strings.Cut(rest, " ")
		ver, sig, found := strings.Cut(one, ",")
		if !found || ver != "v1" {
			continue
		}
		ok = decodeEqual(st, base64.StdEncoding, sig)
	}
	if !ok {
		return "no webhook-signature matches: sign with " + a.label + ".secret as v1,<base64 HMAC-SHA256 of webhook-id.webhook-timestamp.body>"
	}
	return ""
}

// decodeEqual decodes sig into st.sig and compares it with st.sum in
// constant time.
func decodeEqual(st *macState, enc *base64.Encoding, sig string) bool {
	// Anything much longer than a MAC cannot match; skip decoding it.
	if enc.DecodedLen(len(sig)) > cap(st.sig) {
		return false
	}
	st.scratch = append(st.scratch[:0], sig...)
	st.sig = st.sig[:cap(st.sig)]
	n, err := enc.Decode(st.sig, st.scratch)
	return err == nil && hmac.Equal(st.sig[:n], st.sum)
}

func (a *auth) checkHMAC(h http.Header, body []byte) string {
	v := hget(h, a.hmacHeader)
	if v == "" {
		return "missing " + a.hmacHeader + " header: send " + a.hmacPrefix + "<hex HMAC of the body with " + a.label + ".hmac.secret>"
	}
	hexSig, ok := strings.CutPrefix(v, a.hmacPrefix)
	st := a.hmac.get()
	defer a.hmac.put(st)
	if ok && len(hexSig) == hex.EncodedLen(st.mac.Size()) {
		st.mac.Write(body)
		st.sum = st.mac.Sum(st.sum[:0])
		st.scratch = append(st.scratch[:0], hexSig...)
		st.sig = st.sig[:cap(st.sig)]
		n, err := hex.Decode(st.sig, st.scratch)
		if err == nil && hmac.Equal(st.sig[:n], st.sum) {
			return ""
		}
	}
	return a.hmacHeader + " does not match: send " + a.hmacPrefix + "<hex HMAC of the raw body with " + a.label + ".hmac.secret>"
}

func (a *auth) checkToken(r *http.Request) bool {
	if v := hget(r.Header, hdrAuthorization); v != "" {
		if len(v) > 7 && strings.EqualFold(v[:7], "Bearer ") {
			return subtle.ConstantTimeCompare([]byte(strings.TrimSpace(v[7:])), a.token) == 1
		}
	}
	if r.URL.RawQuery != "" {
		q, err := url.ParseQuery(r.URL.RawQuery)
		if err == nil {
			if tok := q.Get("token"); tok != "" {
				return subtle.ConstantTimeCompare([]byte(tok), a.token) == 1
			}
		}
	}
	return false
}
