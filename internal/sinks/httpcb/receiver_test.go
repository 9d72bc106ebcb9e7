package httpcb_test

import (
	"bufio"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/cakework-relay/cakework-relay/internal/event"
	"github.com/cakework-relay/cakework-relay/internal/sinks/httpcb"
)

const testSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// answer is what the receiver replies to one request.
type answer struct {
	status int
	header map[string]string
	delay  time.Duration
	hangup bool // close the connection without answering
}

// receiver is a real HTTP endpoint that verifies every request with the
// reference Standard Webhooks library and records what it accepted.
type receiver struct {
	t   testing.TB
	srv *httptest.Server
	wh  *standardwebhooks.Webhook

	mu       sync.Mutex
	script   func(attempt int, e event.Event) answer // attempt: 1-based, per event id
	attempts map[string]int
	accepted []event.Event
	requests int
	problems []string
	headers  []http.Header

	inFlight, maxInFlight atomic.Int32
}

func newReceiver(t testing.TB) *receiver {
	wh, err := standardwebhooks.NewWebhook(testSecret)
	if err != nil {
		t.Fatal(err)
	}
	r := &receiver{t: t, wh: wh, attempts: map[string]int{}}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) setScript(f func(attempt int, e event.Event) answer) {
	r.mu.Lock()
	r.script = f
	r.mu.Unlock()
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	n := r.inFlight.Add(1)
	defer r.inFlight.Add(-1)
	for {
		m := r.maxInFlight.Load()
		if n <= m || r.maxInFlight.CompareAndSwap(m, n) {
			break
		}
	}
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	r.requests++
	r.headers = append(r.headers, req.Header.Clone())
	if err := r.wh.Verify(body, req.Header); err != nil {
		r.problems = append(r.problems, "signature: "+err.Error())
		r.mu.Unlock()
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	if ct := req.Header.Get("Content-Type"); ct != httpcb.ContentType {
		r.problems = append(r.problems, "content-type "+ct)
	}
	e, err := event.Decode(body)
	if err != nil {
		r.problems = append(r.problems, err.Error())
		r.mu.Unlock()
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if req.Header.Get("webhook-id") != e.ID {
		r.problems = append(r.problems, "webhook-id is not the event id")
	}
	r.attempts[e.ID]++
	a := answer{status: http.StatusOK}
	if r.script != nil {
		a = r.script(r.attempts[e.ID], e)
	}
	r.mu.Unlock()
	if a.delay > 0 {
		time.Sleep(a.delay)
	}
	if a.hangup {
		if hj, ok := w.(http.Hijacker); ok {
			conn, _, err := hj.Hijack()
			if err == nil {
				conn.Close()
				return
			}
		}
	}
	for k, v := range a.header {
		w.Header().Set(k, v)
	}
	if a.status == 0 {
		a.status = http.StatusOK
	}
	if a.status >= 200 && a.status < 300 {
		r.mu.Lock()
		r.accepted = append(r.accepted, e)
		r.mu.Unlock()
	}
	w.WriteHeader(a.status)
	bw := bufio.NewWriter(w)
	bw.WriteString("status " + http.StatusText(a.status))
	bw.Flush()
}

func (r *receiver) acceptedEvents() []event.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]event.Event(nil), r.accepted...)
}

func (r *receiver) attemptsOf(id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.attempts[id]
}

func (r *receiver) requestCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.requests
}

func (r *receiver) checkClean() {
	r.t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range r.problems {
		r.t.Error("receiver:", p)
	}
}
