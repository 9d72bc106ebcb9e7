package statuspage_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/statuspage"
)

// client is a cookie-less HTTP client against the relay; requests carry
// what a browser would.
type client struct {
	t    *testing.T
	base string
}

type reqOpts struct {
	cookie  string
	csrf    string
	origin  string
	fetch   string // Sec-Fetch-Site
	forward string // X-Forwarded-Proto
	body    string
}

func (c client) do(method, path string, o reqOpts) (*http.Response, string) {
	c.t.Helper()
	req, _ := http.NewRequest(method, c.base+path, strings.NewReader(o.body))
	if o.body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if o.cookie != "" {
		req.AddCookie(&http.Cookie{Name: statuspage.CookieName, Value: o.cookie})
	}
	for k, v := range map[string]string{"X-CSRF-Token": o.csrf, "Origin": o.origin, "Sec-Fetch-Site": o.fetch, "X-Forwarded-Proto": o.forward} {
		if v != "" {
			req.Header.Set(k, v)
		}
	}
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp, string(b)
}

// signIn signs in and returns the session cookie and the CSRF token.
func (c client) signIn() (*http.Cookie, string) {
	c.t.Helper()
	resp, body := c.do(http.MethodPost, "/ui/signin", reqOpts{body: `{"token":"` + adminToken + `"}`, fetch: "same-origin"})
	if resp.StatusCode != 200 {
		c.t.Fatalf("sign-in: %d %s", resp.StatusCode, body)
	}
	var s struct {
		CSRF string `json:"csrf"`
	}
	json.Unmarshal([]byte(body), &s)
	for _, ck := range resp.Cookies() {
		if ck.Name == statuspage.CookieName {
			return ck, s.CSRF
		}
	}
	c.t.Fatal("sign-in set no session cookie")
	return nil, ""
}

func TestSessionCookieAttributes(t *testing.T) {
	r := startRelay(t, relayOptions{token: adminToken})
	c := client{t, r.base}
	ck, csrf := c.signIn()
	if !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || ck.Path != "/" {
		t.Errorf("cookie %+v: want HttpOnly, SameSite=Strict, Path=/", ck)
	}
	if ck.Secure {
		t.Error("Secure on a plain-HTTP sign-in: the browser would never send it back")
	}
	if ck.MaxAge <= 0 || ck.MaxAge > int(statuspage.DefaultSessionTTL/time.Second) || ck.Expires.IsZero() {
		t.Errorf("cookie MaxAge %d, Expires %v: want an expiring cookie, at most %s", ck.MaxAge, ck.Expires, statuspage.DefaultSessionTTL)
	}
	if len(ck.Value) < 40 || csrf == "" || csrf == ck.Value {
		t.Errorf("session id %q, CSRF token %q: want long random values, not the same", ck.Value, csrf)
	}
	// Behind a TLS-terminating proxy, the cookie is Secure.
	resp, _ := c.do(http.MethodPost, "/ui/signin", reqOpts{body: `{"token":"` + adminToken + `"}`, forward: "https"})
	if cks := resp.Cookies(); len(cks) != 1 || !cks[0].Secure {
		t.Errorf("sign-in with X-Forwarded-Proto: https: cookies %v, want one Secure cookie", cks)
	}
	// Over TLS itself, too.
	tlsSrv := httptest.NewUnstartedServer(r.app.Core().HTTP)
	tlsSrv.StartTLS()
	defer tlsSrv.Close()
	req, _ := http.NewRequest(http.MethodPost, tlsSrv.URL+"/ui/signin", strings.NewReader(`{"token":"`+adminToken+`"}`))
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
	tresp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	tresp.Body.Close()
	if cks := tresp.Cookies(); len(cks) != 1 || !cks[0].Secure {
		t.Errorf("sign-in over TLS: cookies %v, want one Secure cookie", cks)
	}
	// Sign-out ends the session and clears the cookie.
	resp, body := c.do(http.MethodPost, "/ui/signout", reqOpts{cookie: ck.Value, csrf: csrf, fetch: "same-origin"})
	if resp.StatusCode != 200 || len(resp.Cookies()) != 1 || resp.Cookies()[0].MaxAge >= 0 {
		t.Fatalf("sign-out: %d %s, cookies %v", resp.StatusCode, body, resp.Cookies())
	}
	if resp, _ := c.do(http.MethodGet, "/ui/events", reqOpts{cookie: ck.Value}); resp.StatusCode != 401 {
		t.Errorf("events after sign-out: %d, want 401", resp.StatusCode)
	}
}

func TestWrongTokenSetsNoCookie(t *testing.T) {
	r := startRelay(t, relayOptions{token: adminToken})
	c := client{t, r.base}
	for _, body := range []string{`{"token":"wrong"}`, `{"token":""}`, `{}`, `not json`} {
		resp, text := c.do(http.MethodPost, "/ui/signin", reqOpts{body: body})
		if resp.StatusCode/100 != 4 || len(resp.Cookies()) != 0 {
			t.Errorf("sign-in with %s: %d %s, cookies %v; want 4xx and no cookie", body, resp.StatusCode, text, resp.Cookies())
		}
	}
}

// Without a session nothing of the relay's is served: not in the page, not
// on the event stream, not through an action, and the cookie does not open
// the admin API.
func TestNoDataWithoutSession(t *testing.T) {
	r := startRelay(t, relayOptions{token: adminToken})
	c := client{t, r.base}
	r.postWebhook(t, `{"marker":"secret-payload"}`)
	waitFor(t, 10*time.Second, "the dead letter", func() bool { return r.deadLetters(t) == 1 })

	for _, path := range []string{"/", "/ui/assets/app.js", "/ui/assets/style.css", "/ui/session"} {
		resp, body := c.do(http.MethodGet, path, reqOpts{})
		if resp.StatusCode != 200 {
			t.Errorf("GET %s: %d", path, resp.StatusCode)
		}
		for _, leak := range []string{"secret-payload", "hook", "webhook.ci", "csrf\":\""} {
			if strings.Contains(body, leak) {
				t.Errorf("GET %s without a session shows %q", path, leak)
			}
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "connect-src 'self'") {
			t.Errorf("GET %s: Content-Security-Policy %q", path, csp)
		}
	}
	for _, cookie := range []string{"", "forged-session-id"} {
		if resp, body := c.do(http.MethodGet, "/ui/events", reqOpts{cookie: cookie}); resp.StatusCode != 401 || strings.Contains(body, "secret-payload") {
			t.Errorf("events with cookie %q: %d %s, want 401", cookie, resp.StatusCode, body)
		}
		if resp, body := c.do(http.MethodPost, "/ui/actions/replay/1", reqOpts{cookie: cookie, fetch: "same-origin"}); resp.StatusCode != 401 {
			t.Errorf("replay with cookie %q: %d %s, want 401", cookie, resp.StatusCode, body)
		}
	}
	if r.deadLetters(t) != 1 {
		t.Fatal("the dead letter was replayed without a session")
	}
	// A signed-in cookie does not stand in for the admin token on /v1.
	ck, _ := c.signIn()
	if resp, _ := c.do(http.MethodGet, "/v1/status", reqOpts{cookie: ck.Value}); resp.StatusCode != 401 {
		t.Errorf("/v1/status with the page's cookie: %d, want 401", resp.StatusCode)
	}
}

// The event stream, signed in: the recent events, then snapshots of the
// same status map /v1/status gives, past the server's write timeout; and
// the relay stops promptly with a stream open.
func TestEventStreamSignedIn(t *testing.T) {
	r := startRelay(t, relayOptions{token: adminToken, writeTimeout: time.Second})
	c := client{t, r.base}
	r.postWebhook(t, `{"marker":"streamed"}`)
	ck, _ := c.signIn()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, r.base+"/ui/events", nil)
	req.AddCookie(ck)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("events: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	sawEvent, sawSnapshot := false, false
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	name := ""
	// Snapshots come every second: read them for more than twice the
	// write timeout.
	until := time.Now().Add(2500 * time.Millisecond)
	for sc.Scan() && !(sawEvent && sawSnapshot && time.Now().After(until)) {
		line := sc.Text()
		if n, ok := strings.CutPrefix(line, "event: "); ok {
			name = n
			continue
		}
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			continue
		}
		switch name {
		case "ev":
			sawEvent = sawEvent || strings.Contains(data, "streamed") && strings.Contains(data, `"type":"webhook.ci"`)
		case "snapshot":
			var s struct {
				Status map[string]any `json:"status"`
				DLQ    struct {
					DeadLetters []any `json:"deadLetters"`
				} `json:"dlq"`
				Rates struct {
					EverySeconds float64 `json:"everySeconds"`
				} `json:"rates"`
			}
			if err := json.Unmarshal([]byte(data), &s); err != nil {
				t.Fatal(err)
			}
			for _, section := range []string{"sinks", "outbox", "autostop", "status", "ready"} {
				if _, ok := s.Status[section]; !ok {
					t.Errorf("snapshot status has no %q: %v", section, s.Status)
				}
			}
			if s.Rates.EverySeconds <= 0 {
				t.Errorf("snapshot rates: %+v", s.Rates)
			}
			sawSnapshot = true
		}
	}
	if !sawEvent || !sawSnapshot || time.Now().Before(until) {
		t.Fatalf("stream ended (%v) with event %v, snapshot %v, before %s", sc.Err(), sawEvent, sawSnapshot, until)
	}
	sctx, scancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer scancel()
	if err := r.app.Stop(sctx); err != nil {
		t.Fatalf("stop with a stream open: %v", err)
	}
	for sc.Scan() {
	}
	if ctx.Err() != nil {
		t.Fatal("the stream outlived the relay")
	}
}

// Every POST of the page refuses cross-site requests; an action also needs
// the session's CSRF token. The same-origin request with the token runs
// the admin handler.
func TestCrossSiteGuard(t *testing.T) {
	r := startRelay(t, relayOptions{token: adminToken})
	c := client{t, r.base}
	ck, csrf := c.signIn()
	host := strings.TrimPrefix(r.base, "http://")
	act := "/ui/actions/activity/vm1"
	cases := []struct {
		name string
		o    reqOpts
		want int
	}{
		// Past the guard, the admin handler answers: this relay has no
		// poller, so it knows no VM vm1 (404 from the handler, not 403).
		{"same origin, with token", reqOpts{cookie: ck.Value, csrf: csrf, origin: "http://" + host, fetch: "same-origin"}, 404},
		{"no browser headers, with token", reqOpts{cookie: ck.Value, csrf: csrf}, 404},
		{"cross-site Sec-Fetch-Site", reqOpts{cookie: ck.Value, csrf: csrf, origin: "http://" + host, fetch: "cross-site"}, 403},
		{"same-site Sec-Fetch-Site", reqOpts{cookie: ck.Value, csrf: csrf, fetch: "same-site"}, 403},
		{"foreign Origin", reqOpts{cookie: ck.Value, csrf: csrf, origin: "http://evil.example"}, 403},
		{"null Origin", reqOpts{cookie: ck.Value, csrf: csrf, origin: "null"}, 403},
		{"same origin, no CSRF token", reqOpts{cookie: ck.Value, fetch: "same-origin"}, 403},
		{"same origin, wrong CSRF token", reqOpts{cookie: ck.Value, csrf: csrf + "x", fetch: "same-origin"}, 403},
		{"CSRF token without the session", reqOpts{csrf: csrf, fetch: "same-origin"}, 401},
	}
	for _, tc := range cases {
		resp, body := c.do(http.MethodPost, act, tc.o)
		if resp.StatusCode != tc.want {
			t.Errorf("%s: %d %s, want %d", tc.name, resp.StatusCode, body, tc.want)
		}
		if tc.want == 404 && !strings.Contains(body, "activity counts only for VMs the poller knows") {
			t.Errorf("%s: %s, want the admin handler's answer", tc.name, body)
		}
	}
	// Sign-in and sign-out are guarded too (no login CSRF).
	if resp, _ := c.do(http.MethodPost, "/ui/signin", reqOpts{body: `{"token":"` + adminToken + `"}`, origin: "http://evil.example"}); resp.StatusCode != 403 || len(resp.Cookies()) != 0 {
		t.Errorf("cross-site sign-in: %d, cookies %v; want 403 and none", resp.StatusCode, resp.Cookies())
	}
	if resp, _ := c.do(http.MethodPost, "/ui/signout", reqOpts{cookie: ck.Value, fetch: "cross-site"}); resp.StatusCode != 403 {
		t.Errorf("cross-site sign-out: %d, want 403", resp.StatusCode)
	}
	if resp, _ := c.do(http.MethodPost, "/ui/signout", reqOpts{cookie: ck.Value, fetch: "same-origin"}); resp.StatusCode != 403 {
		t.Errorf("sign-out without the CSRF token: %d, want 403", resp.StatusCode)
	}
	// Unknown actions and bad ids get the admin API's clear errors.
	if resp, body := c.do(http.MethodPost, "/ui/actions/explode/1", reqOpts{cookie: ck.Value, csrf: csrf}); resp.StatusCode != 404 || !strings.Contains(body, "replay, watch, unwatch or activity") {
		t.Errorf("unknown action: %d %s", resp.StatusCode, body)
	}
	if resp, body := c.do(http.MethodPost, "/ui/actions/replay/abc", reqOpts{cookie: ck.Value, csrf: csrf}); resp.StatusCode != 400 || !strings.Contains(body, "positive number") {
		t.Errorf("replay of a bad id: %d %s", resp.StatusCode, body)
	}
	if resp, body := c.do(http.MethodPost, "/ui/actions/watch/b1", reqOpts{cookie: ck.Value, csrf: csrf}); resp.StatusCode != 503 || !strings.Contains(body, "poller is off") {
		t.Errorf("watch with the poller off: %d %s", resp.StatusCode, body)
	}
}

// With no admin token the page says how to turn it on, and nothing else.
func TestPageOffWithoutAdminToken(t *testing.T) {
	r := startRelay(t, relayOptions{})
	c := client{t, r.base}
	r.postWebhook(t, `{"marker":"secret-payload"}`)
	resp, body := c.do(http.MethodGet, "/", reqOpts{})
	if resp.StatusCode != 200 || !strings.Contains(body, "http.admin_token") || !strings.Contains(body, "RELAY_ADMIN_TOKEN") {
		t.Fatalf("GET /: %d %s", resp.StatusCode, body)
	}
	if strings.Contains(body, "<script") || strings.Contains(body, "secret-payload") {
		t.Errorf("the off page has a script or data: %s", body)
	}
	for _, p := range []string{"/ui/session", "/ui/events", "/ui/assets/app.js"} {
		if resp, body := c.do(http.MethodGet, p, reqOpts{}); resp.StatusCode != 404 || !strings.Contains(body, "http.admin_token") {
			t.Errorf("GET %s: %d %s, want 404 saying how to turn it on", p, resp.StatusCode, body)
		}
	}
	if resp, _ := c.do(http.MethodPost, "/ui/signin", reqOpts{body: `{"token":""}`}); resp.StatusCode != 404 || len(resp.Cookies()) != 0 {
		t.Errorf("sign-in with no admin token: %d, cookies %v", resp.StatusCode, resp.Cookies())
	}
}
