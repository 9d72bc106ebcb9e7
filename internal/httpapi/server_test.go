package httpapi

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
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
