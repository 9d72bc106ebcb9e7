package httpapi

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestHandleExact(t *testing.T) {
	s := New(Options{MaxBodyBytes: 8})
	s.HandleExact(http.MethodPost, "/hook", func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			WriteError(w, http.StatusRequestEntityTooLarge, err.Error())
			return
		}
		WriteJSON(w, http.StatusAccepted, map[string]any{"got": string(b)})
	})
	for _, c := range []struct {
		method, path, body string
		status             int
		answer             string
	}{
		{http.MethodPost, "/hook", "small", http.StatusAccepted, `"got":"small"`},
		{http.MethodPost, "/hook?token=x", "small", http.StatusAccepted, `"got":"small"`},
		// The body limit applies on the fast path as through the router.
		{http.MethodPost, "/hook", "more than eight", http.StatusRequestEntityTooLarge, "too large"},
		// Other methods and paths go to the router: 405 and 404 as before.
		{http.MethodGet, "/hook", "", http.StatusMethodNotAllowed, "method GET not allowed on /hook"},
		{http.MethodPost, "/hook/", "x", http.StatusNotFound, "no route for POST /hook/"},
		{http.MethodGet, "/healthz", "", http.StatusOK, `"ok":true`},
	} {
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, httptest.NewRequest(c.method, c.path, strings.NewReader(c.body)))
		if rec.Code != c.status || !strings.Contains(rec.Body.String(), c.answer) {
			t.Errorf("%s %s: %d %s, want %d with %s", c.method, c.path, rec.Code, rec.Body, c.status, c.answer)
		}
	}
}

// With http.admin_listen, the admin API, pprof and the metrics live on the
// admin address only; the public one answers them like any unknown path,
// and the admin one serves nothing public (webhooks).
func TestAdminListenSplitsThePorts(t *testing.T) {
	s := New(Options{Listen: "127.0.0.1:0", AdminListen: "127.0.0.1:0", AdminToken: "tok", Gatherer: prometheus.NewRegistry()})
	s.HandleExact(http.MethodPost, "/webhooks/x", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusAccepted) })
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	s.Start()
	defer s.Shutdown(context.Background())
	do := func(method, addr, path string) int {
		req, _ := http.NewRequest(method, "http://"+addr+path, nil)
		req.Header.Set("Authorization", "Bearer tok")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, tc := range []struct {
		method, path  string
		public, admin int
	}{
		{"GET", "/v1/status", 404, 200},
		{"GET", "/v1/debug/pprof/heap", 404, 200},
		{"GET", "/metrics", 404, 200},
		{"GET", "/healthz", 200, 200},
		{"GET", "/readyz", 200, 200},
		{"POST", "/webhooks/x", 202, 404},
	} {
		if got := do(tc.method, s.Addr(), tc.path); got != tc.public {
			t.Errorf("public %s %s: %d, want %d", tc.method, tc.path, got, tc.public)
		}
		if got := do(tc.method, s.AdminAddr(), tc.path); got != tc.admin {
			t.Errorf("admin %s %s: %d, want %d", tc.method, tc.path, got, tc.admin)
		}
	}
}
