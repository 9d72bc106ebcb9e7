// Package httpapi is the relay's HTTP server: health, readiness, metrics,
// the admin API behind a bearer token, and the routes other packages mount
// (webhook receivers). It owns limits and timeouts so handlers don't have to.
package httpapi

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Options configure the server.
type Options struct {
	Listen string
	// AdminListen, when set, is where /v1 and /metrics are served; the
	// public listener then answers them 404.
	AdminListen  string
	MaxBodyBytes int64
	AdminToken   string
	ReadTimeout  time.Duration
	WriteTimeout time.Duration
	Gatherer     prometheus.Gatherer
	Logger       *slog.Logger
}

// Check returns nil when a component is ready, or why it is not.
type Check func() error

// Server is the relay's HTTP server.
type Server struct {
	o     Options
	log   *slog.Logger
	root  *mux.Router
	admin *mux.Router
	srv   *http.Server
	ln    net.Listener
	// The admin listener, with AdminListen.
	adminSrv *http.Server
	adminLn  net.Listener

	// exact routes skip the router's matching and its two request copies
	// (the webhook hot path); the router still has them, for 405s.
	exact map[string]exactRoute

	onShutdown []func()

	mu       sync.RWMutex
	checks   []namedCheck
	degraded []namedCheck
	status   map[string]func() any
}

type exactRoute struct {
	method string
	h      http.Handler
}

type namedCheck struct {
	name string
	fn   Check
}

// New builds the server and its fixed routes.
func New(o Options) *Server {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = 1 << 20
	}
	s := &Server{o: o, log: o.Logger.With("component", "http"), root: mux.NewRouter(), exact: map[string]exactRoute{}, status: map[string]func() any{}}
	s.root.Use(s.limitBody)
	s.root.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		WriteJSON(w, http.StatusOK, map[string]any{"ok": true})
	}).Methods(http.MethodGet)
	s.root.HandleFunc("/readyz", s.readyz).Methods(http.MethodGet)
	if o.Gatherer != nil {
		s.root.Handle("/metrics", promhttp.HandlerFor(o.Gatherer, promhttp.HandlerOpts{})).Methods(http.MethodGet)
	}
	s.admin = s.root.PathPrefix("/v1").Subrouter()
	s.admin.Use(s.adminAuth)
	s.admin.HandleFunc("/status", s.statusHandler).Methods(http.MethodGet)
	// Go profiling, behind the admin token (e.g. watching a soak's memory).
	s.admin.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	s.admin.HandleFunc("/debug/pprof/profile", pprof.Profile)
	s.admin.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	s.admin.HandleFunc("/debug/pprof/trace", pprof.Trace)
	s.admin.PathPrefix("/debug/pprof/").Handler(http.StripPrefix("/v1", http.HandlerFunc(pprof.Index)))
	s.root.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		WriteError(w, http.StatusNotFound, fmt.Sprintf("no route for %s %s", r.Method, r.URL.Path))
	})
	s.root.MethodNotAllowedHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		WriteError(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed on %s", r.Method, r.URL.Path))
	})
	return s
}

// Router is where public routes (webhook receivers) are mounted.
func (s *Server) Router() *mux.Router { return s.root }

// HandleExact routes method on exactly path (no variables, no trailing
// slash) to h, on the public router. Call it before Start.
func (s *Server) HandleExact(method, path string, h http.HandlerFunc) {
	s.root.Handle(path, h).Methods(method)
	s.exact[path] = exactRoute{method: method, h: s.limitBody(h)}
}

// ServeHTTP serves an exact route directly and everything else through the
// router.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if e, ok := s.exact[r.URL.Path]; ok && r.Method == e.method {
		e.h.ServeHTTP(w, r)
		return
	}
	s.root.ServeHTTP(w, r)
}

// Admin is the /v1 subrouter; every route on it needs the admin token.
func (s *Server) Admin() *mux.Router { return s.admin }

// AddReadyCheck adds a readiness condition shown by /readyz.
func (s *Server) AddReadyCheck(name string, fn Check) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checks = append(s.checks, namedCheck{name, fn})
}

// AddDegradedCheck adds a condition that makes the relay degraded, not
// unready: it still accepts webhooks, so /readyz stays 200 but says
// "degraded" with the reasons, and so does /v1/status.
func (s *Server) AddDegradedCheck(name string, fn Check) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.degraded = append(s.degraded, namedCheck{name, fn})
}

// AddStatus adds a section to GET /v1/status.
func (s *Server) AddStatus(name string, fn func() any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status[name] = fn
}

// Ready runs the readiness checks and returns every failure.
func (s *Server) Ready() error {
	s.mu.RLock()
	checks := append([]namedCheck(nil), s.checks...)
	s.mu.RUnlock()
	return run(checks)
}

// Degraded runs the degraded checks and returns every failure.
func (s *Server) Degraded() error {
	s.mu.RLock()
	checks := append([]namedCheck(nil), s.degraded...)
	s.mu.RUnlock()
	return run(checks)
}

func run(checks []namedCheck) error {
	var errs []error
	for _, c := range checks {
		if err := c.fn(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", c.name, err))
		}
	}
	return errors.Join(errs...)
}

// readyz: 503 when not ready; otherwise 200 with status "ok", or
// "degraded" and the reasons.
func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	if err := s.Ready(); err != nil {
		WriteJSON(w, http.StatusServiceUnavailable, map[string]any{"ready": false, "status": "unready", "error": strings.ReplaceAll(err.Error(), "\n", "; ")})
		return
	}
	out := map[string]any{"ready": true, "status": "ok"}
	if err := s.Degraded(); err != nil {
		out["status"] = "degraded"
		out["degraded"] = strings.Split(err.Error(), "\n")
	}
	WriteJSON(w, http.StatusOK, out)
}

func (s *Server) statusHandler(w http.ResponseWriter, _ *http.Request) {
	WriteJSON(w, http.StatusOK, s.Status())
}

// Status is the body of GET /v1/status: every section added with
// AddStatus, with "ready", "status" and the reasons when not ok. The status
// page shows the same map.
func (s *Server) Status() map[string]any {
	s.mu.RLock()
	names := make([]string, 0, len(s.status))
	for n := range s.status {
		names = append(names, n)
	}
	sort.Strings(names)
	out := map[string]any{}
	for _, n := range names {
		out[n] = s.status[n]()
	}
	s.mu.RUnlock()
	out["status"] = "ok"
	if err := s.Ready(); err != nil {
		out["ready"] = false
		out["status"] = "unready"
		out["notReady"] = strings.Split(err.Error(), "\n")
	} else {
		out["ready"] = true
	}
	if err := s.Degraded(); err != nil {
		if out["status"] == "ok" {
			out["status"] = "degraded"
		}
		out["degraded"] = strings.Split(err.Error(), "\n")
	}
	return out
}

// vouched marks a request whose caller already checked who sent it (the
// status page's session): the admin routes serve it without the bearer
// token. Only this package can set it.
type vouchedKey struct{}

// ServeAdmin serves r through the admin (/v1) routes as if it carried the
// admin token. The caller must have authenticated r another way (a status
// page session, with its cross-site checks): the page's actions run the
// admin handlers themselves, not copies. r.URL.Path must start with /v1/.
func (s *Server) ServeAdmin(w http.ResponseWriter, r *http.Request) {
	s.root.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), vouchedKey{}, true)))
}

// OnShutdown registers f to run when Shutdown begins, for long-lived
// responses (the status page's event stream) that would otherwise keep
// Shutdown waiting. Call it before Start.
func (s *Server) OnShutdown(f func()) { s.onShutdown = append(s.onShutdown, f) }

func (s *Server) adminAuth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if v, _ := r.Context().Value(vouchedKey{}).(bool); v {
			next.ServeHTTP(w, r)
			return
		}
		if s.o.AdminToken == "" {
			WriteError(w, http.StatusForbidden, "the admin API is off; set http.admin_token (or RELAY_ADMIN_TOKEN) to turn it on")
			return
		}
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(tok), []byte(s.o.AdminToken)) != 1 {
			WriteError(w, http.StatusUnauthorized, "missing or wrong admin token; send Authorization: Bearer <http.admin_token>")
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (s *Server) limitBody(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body != nil {
			r.Body = http.MaxBytesReader(w, r.Body, s.o.MaxBodyBytes)
		}
		next.ServeHTTP(w, r)
	})
}

// Listen binds the addresses now, so a port in use fails at start with
// one clear error.
func (s *Server) Listen() error {
	ln, err := net.Listen("tcp", s.o.Listen)
	if err != nil {
		return fmt.Errorf("http: listen on %s: %w (set http.listen to a free address)", s.o.Listen, err)
	}
	s.ln = ln
	if s.o.AdminListen != "" {
		aln, err := net.Listen("tcp", s.o.AdminListen)
		if err != nil {
			ln.Close()
			return fmt.Errorf("http: listen on %s: %w (set http.admin_listen to a free address)", s.o.AdminListen, err)
		}
		s.adminLn = aln
	}
	return nil
}

// adminPath says whether a path belongs to the admin listener when there
// is one: the admin API (and pprof) and the metrics.
func adminPath(p string) bool {
	return p == "/metrics" || p == "/v1" || strings.HasPrefix(p, "/v1/")
}

// only serves the paths for which want(path) holds, and answers 404 to the
// rest, as the router does for a path it has no route for.
func (s *Server) only(want func(string) bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !want(r.URL.Path) {
			s.root.NotFoundHandler.ServeHTTP(w, r)
			return
		}
		s.ServeHTTP(w, r)
	})
}

// AdminAddr is the bound admin address ("" without http.admin_listen).
func (s *Server) AdminAddr() string {
	if s.adminLn == nil {
		return s.o.AdminListen
	}
	return s.adminLn.Addr().String()
}

// Addr is the bound address (useful with port 0).
func (s *Server) Addr() string {
	if s.ln == nil {
		return s.o.Listen
	}
	return s.ln.Addr().String()
}

// Start serves in the background. Call Listen first.
func (s *Server) Start() {
	var public http.Handler = s
	if s.adminLn != nil {
		public = s.only(func(p string) bool { return !adminPath(p) })
		s.adminSrv = s.newHTTPServer(s.only(func(p string) bool {
			return adminPath(p) || p == "/healthz" || p == "/readyz"
		}))
		go func() {
			if err := s.adminSrv.Serve(s.adminLn); !errors.Is(err, http.ErrServerClosed) {
				s.log.Error("http admin server stopped", "err", err)
			}
		}()
		s.log.Info("http admin API and metrics listening", "addr", s.AdminAddr())
	}
	s.srv = s.newHTTPServer(public)
	for _, f := range s.onShutdown {
		s.srv.RegisterOnShutdown(f)
	}
	go func() {
		if err := s.srv.Serve(s.ln); !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("http server stopped", "err", err)
		}
	}()
	s.log.Info("http listening", "addr", s.Addr())
}

func (s *Server) newHTTPServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       s.o.ReadTimeout,
		WriteTimeout:      s.o.WriteTimeout,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
}

// Shutdown stops accepting and waits for in-flight requests, bounded by ctx.
func (s *Server) Shutdown(ctx context.Context) error {
	var errs []error
	for _, p := range []struct {
		srv *http.Server
		ln  net.Listener
	}{{s.srv, s.ln}, {s.adminSrv, s.adminLn}} {
		switch {
		case p.srv != nil:
			if err := p.srv.Shutdown(ctx); err != nil {
				p.srv.Close()
				errs = append(errs, err)
			}
		case p.ln != nil:
			errs = append(errs, p.ln.Close())
		}
	}
	return errors.Join(errs...)
}

// WriteJSON answers with v as JSON.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// WriteError answers {"error": msg}.
func WriteError(w http.ResponseWriter, status int, msg string) {
	WriteJSON(w, status, map[string]string{"error": msg})
}
