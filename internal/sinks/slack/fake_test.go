package slack

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/sinks/sinktest"
)

const (
	testToken   = "xoxb-1111-2222-s3cr3tT0k3n"
	webhookPath = "/services/T0000/B0000/WeBhOoKsEcReT"
)

// fakeSlack is a hand-written Slack: the Web API methods the sink uses
// (auth.test, chat.postMessage, chat.update) under /api/, and an incoming
// webhook under /services/. It records what it accepted.
type fakeSlack struct {
	srv *httptest.Server
	now func() time.Time

	mu         sync.Mutex
	mode       sinktest.Mode
	retryAfter time.Duration
	code       string          // the Slack error code of Permanent
	script     []sinktest.Mode // modes for the next writes, then mode
	authCode   string          // auth.test answers this error
	posts      []fakeMsg
	updates    []fakeMsg
	calls      int
	authCalls  int
	ts         int
}

type fakeMsg struct {
	Channel, TS, ThreadTS, Text string
	Blocks                      json.RawMessage
	At                          time.Time
}

func newFakeSlack(t testing.TB, now func() time.Time) *fakeSlack {
	f := &fakeSlack{now: now, code: "channel_not_found"}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeSlack) APIURL() string     { return f.srv.URL + "/api/" }
func (f *fakeSlack) WebhookURL() string { return f.srv.URL + webhookPath }

func (f *fakeSlack) setMode(m sinktest.Mode, after time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.mode, f.retryAfter = m, after
}

func (f *fakeSlack) Posts() []fakeMsg {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]fakeMsg(nil), f.posts...)
}

func (f *fakeSlack) Updates() []fakeMsg {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]fakeMsg(nil), f.updates...)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func (f *fakeSlack) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	webhook := r.URL.Path == webhookPath
	method := strings.TrimPrefix(r.URL.Path, "/api/")
	if !webhook {
		_ = r.ParseForm()
		tok := r.Form.Get("token")
		if tok == "" {
			tok = strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		}
		if tok != testToken {
			writeJSON(w, map[string]any{"ok": false, "error": "invalid_auth"})
			return
		}
		if method == "auth.test" {
			f.authCalls++
			if f.authCode != "" {
				writeJSON(w, map[string]any{"ok": false, "error": f.authCode})
				return
			}
			writeJSON(w, map[string]any{"ok": true, "team": "T", "user": "relay-bot"})
			return
		}
	}
	f.calls++
	mode := f.mode
	if len(f.script) > 0 {
		mode, f.script = f.script[0], f.script[1:]
	}
	switch mode {
	case sinktest.Transient:
		http.Error(w, "<html>oops</html>", http.StatusInternalServerError)
		return
	case sinktest.Throttled:
		w.Header().Set("Retry-After", fmt.Sprint(int(f.retryAfter/time.Second)))
		http.Error(w, "rate limited", http.StatusTooManyRequests)
		return
	case sinktest.Permanent:
		if webhook {
			http.Error(w, "channel_not_found", http.StatusNotFound)
			return
		}
		writeJSON(w, map[string]any{"ok": false, "error": f.code})
		return
	case sinktest.Down:
		if hj, ok := w.(http.Hijacker); ok {
			if c, _, err := hj.Hijack(); err == nil {
				_ = c.Close()
				return
			}
		}
		http.Error(w, "down", http.StatusBadGateway)
		return
	}
	var now time.Time
	if f.now != nil {
		now = f.now()
	}
	if webhook {
		var m struct {
			Text   string          `json:"text"`
			Blocks json.RawMessage `json:"blocks"`
			Thread string          `json:"thread_ts"`
		}
		if err := json.NewDecoder(r.Body).Decode(&m); err != nil {
			http.Error(w, "invalid_payload", http.StatusBadRequest)
			return
		}
		f.posts = append(f.posts, fakeMsg{Text: m.Text, Blocks: m.Blocks, ThreadTS: m.Thread, At: now})
		_, _ = w.Write([]byte("ok"))
		return
	}
	msg := fakeMsg{Channel: r.Form.Get("channel"), ThreadTS: r.Form.Get("thread_ts"), Text: r.Form.Get("text"), Blocks: json.RawMessage(r.Form.Get("blocks")), At: now}
	if msg.Channel == "#deploys" {
		msg.Channel = "C0DEPLOYS"
	}
	switch method {
	case "chat.postMessage":
		f.ts++
		msg.TS = fmt.Sprintf("1700000000.%06d", f.ts)
		f.posts = append(f.posts, msg)
	case "chat.update":
		msg.TS = r.Form.Get("ts")
		f.updates = append(f.updates, msg)
	default:
		writeJSON(w, map[string]any{"ok": false, "error": "unknown_method"})
		return
	}
	writeJSON(w, map[string]any{"ok": true, "channel": msg.Channel, "ts": msg.TS})
}
