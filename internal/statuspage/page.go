package statuspage

import (
	"bytes"
	"context"
	"crypto/subtle"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cakework-relay/cakework-relay/internal/bus"
	"github.com/cakework-relay/cakework-relay/internal/clock"
	"github.com/cakework-relay/cakework-relay/internal/httpapi"
)

//go:embed assets
var assets embed.FS

// CookieName is the session cookie.
const CookieName = "relay_session"

// Bounds and timings; zero fields of Options get these.
const (
	DefaultMaxSessions  = 32
	DefaultSessionTTL   = 12 * time.Hour
	DefaultMaxClients   = 16
	DefaultClientBuffer = 256
	DefaultRecentEvents = 200
	DefaultRefresh      = time.Second
	DefaultSlowRefresh  = 5 * time.Second
	DefaultRateEvery    = 5 * time.Second
	DefaultRatePoints   = 120 // ten minutes at 5 s
	// DLQShown is how many dead letters the page lists (GET /v1/dlq's
	// limit); the page says when there are more.
	DLQShown = 100
)

// Options configure the page.
type Options struct {
	// Token is http.admin_token: sign-in takes it. Empty: the page only
	// says how to turn it on.
	Token string
	HTTP  *httpapi.Server
	// Bus is where the page reads events (the relay's own connection).
	Bus *bus.Bus
	// Gatherer gives the counters of the rate charts.
	Gatherer   prometheus.Gatherer
	Registerer prometheus.Registerer
	Clock      clock.Clock
	Logger     *slog.Logger

	MaxSessions  int
	SessionTTL   time.Duration
	MaxClients   int
	ClientBuffer int
	RecentEvents int
	Refresh      time.Duration // how often an open page gets a snapshot
	SlowRefresh  time.Duration // how often the watches and the DLQ are read again
	RateEvery    time.Duration
	RatePoints   int
}

// Page is the status page. It is an app component: Register mounts its
// routes, Start runs its samplers, Stop ends them and every event stream.
type Page struct {
	o        Options
	log      *slog.Logger
	sessions *sessions
	hub      *hub
	rates    *rates

	sessionsGauge prometheus.Gauge
	clientsGauge  prometheus.Gauge
	dropped       prometheus.Counter

	cancel context.CancelFunc
	done   chan struct{}
}

// New checks o and builds the page. Nothing runs until Start.
func New(o Options) (*Page, error) {
	if o.HTTP == nil {
		return nil, errors.New("statuspage: needs the HTTP server")
	}
	if o.Token != "" && o.Bus == nil {
		return nil, errors.New("statuspage: needs the bus")
	}
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	defD := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&o.MaxSessions, DefaultMaxSessions)
	def(&o.MaxClients, DefaultMaxClients)
	def(&o.ClientBuffer, DefaultClientBuffer)
	def(&o.RecentEvents, DefaultRecentEvents)
	def(&o.RatePoints, DefaultRatePoints)
	defD(&o.SessionTTL, DefaultSessionTTL)
	defD(&o.Refresh, DefaultRefresh)
	defD(&o.SlowRefresh, DefaultSlowRefresh)
	defD(&o.RateEvery, DefaultRateEvery)
	p := &Page{
		o:   o,
		log: o.Logger.With("component", "statuspage"),
		sessionsGauge: prometheus.NewGauge(prometheus.GaugeOpts{Name: "relay_statuspage_sessions",
			Help: "Signed-in status page sessions (bounded)."}),
		clientsGauge: prometheus.NewGauge(prometheus.GaugeOpts{Name: "relay_statuspage_clients",
			Help: "Open status page event streams (bounded)."}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "relay_statuspage_dropped_clients_total",
			Help: "Status page event streams dropped because the browser fell behind (it reconnects)."}),
	}
	if o.Registerer != nil {
		o.Registerer.MustRegister(p.sessionsGauge, p.clientsGauge, p.dropped)
	}
	p.sessions = newSessions(o.Clock, o.MaxSessions, o.SessionTTL, func(n int) { p.sessionsGauge.Set(float64(n)) })
	p.rates = newRates(o.Gatherer, o.RatePoints, o.RateEvery)
	p.hub = newHub(p)
	return p, nil
}

// Register mounts GET / and the page's routes under /ui/ on the server's
// public router, and ends the event streams when the server shuts down.
func (p *Page) Register() {
	r := p.o.HTTP.Router()
	r.HandleFunc("/", p.index).Methods(http.MethodGet, http.MethodHead)
	ui := r.PathPrefix("/ui").Subrouter()
	ui.Use(p.headers)
	if p.o.Token == "" {
		ui.PathPrefix("/").HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			httpapi.WriteError(w, http.StatusNotFound, offMessage)
		})
		return
	}
	ui.HandleFunc("/assets/{file}", p.asset).Methods(http.MethodGet, http.MethodHead)
	ui.HandleFunc("/session", p.sessionInfo).Methods(http.MethodGet)
	ui.HandleFunc("/signin", p.signIn).Methods(http.MethodPost)
	ui.HandleFunc("/signout", p.signOut).Methods(http.MethodPost)
	ui.HandleFunc("/events", p.events).Methods(http.MethodGet)
	ui.HandleFunc("/actions/{action}/{id}", p.action).Methods(http.MethodPost)
	p.o.HTTP.OnShutdown(p.hub.closeAll)
}

const offMessage = "the status page is off: set http.admin_token (or RELAY_ADMIN_TOKEN) and restart the relay, then sign in here with that token"

// Name is the component name.
func (p *Page) Name() string { return "statuspage" }

// Start samples the rate counters and, while a page is open, builds the
// snapshots.
func (p *Page) Start(ctx context.Context) error {
	if p.o.Token == "" {
		return nil
	}
	ctx, p.cancel = context.WithCancel(ctx)
	p.done = make(chan struct{})
	go func() {
		defer close(p.done)
		p.hub.run(ctx)
	}()
	return nil
}

// Stop ends the samplers and every open event stream.
func (p *Page) Stop(ctx context.Context) error {
	if p.cancel == nil {
		return nil
	}
	p.cancel()
	p.hub.closeAll()
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// headers: no caching of anything with data, no framing, no sniffing, and
// a policy that lets the page talk to this origin only.
func (p *Page) headers(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		securityHeaders(w.Header())
		next.ServeHTTP(w, r)
	})
}

func securityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
}

func (p *Page) index(w http.ResponseWriter, r *http.Request) {
	securityHeaders(w.Header())
	name := "assets/index.html"
	if p.o.Token == "" {
		name = "assets/off.html"
	}
	b, err := assets.ReadFile(name)
	if err != nil {
		httpapi.WriteError(w, http.StatusInternalServerError, err.Error())
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(b))
}

var assetTypes = map[string]string{
	".js":  "text/javascript; charset=utf-8",
	".css": "text/css; charset=utf-8",
}

func (p *Page) asset(w http.ResponseWriter, r *http.Request) {
	file := mux.Vars(r)["file"]
	ctype := ""
	for ext, t := range assetTypes {
		if strings.HasSuffix(file, ext) {
			ctype = t
		}
	}
	b, err := assets.ReadFile("assets/" + file)
	if ctype == "" || err != nil {
		httpapi.WriteError(w, http.StatusNotFound, "no such asset: "+file)
		return
	}
	w.Header().Set("Content-Type", ctype)
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(b))
}

// current is the request's live session.
func (p *Page) current(r *http.Request) (session, bool) {
	c, err := r.Cookie(CookieName)
	if err != nil {
		return session{}, false
	}
	return p.sessions.get(c.Value)
}

// sessionInfo tells the page whether it is signed in, and gives it the
// CSRF token its actions send. Only a page of this origin can read it.
func (p *Page) sessionInfo(w http.ResponseWriter, r *http.Request) {
	s, ok := p.current(r)
	if !ok {
		httpapi.WriteJSON(w, http.StatusOK, map[string]any{"signedIn": false})
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"signedIn": true, "csrf": s.csrf, "expires": s.expires.UTC()})
}

// crossSite says why r is refused as a cross-site request, or "". Browsers
// send Sec-Fetch-Site and Origin on every POST; a request without either
// comes from no browser page, and an action still needs the CSRF token.
func crossSite(r *http.Request) string {
	if sfs := r.Header.Get("Sec-Fetch-Site"); sfs != "" && sfs != "same-origin" {
		return "Sec-Fetch-Site is " + sfs
	}
	if o := r.Header.Get("Origin"); o != "" {
		u, err := url.Parse(o)
		if err != nil || u.Host == "" || !strings.EqualFold(u.Host, r.Host) {
			return "Origin " + o + " is not this host (" + r.Host + ")"
		}
	}
	return ""
}

func refuseCrossSite(w http.ResponseWriter, r *http.Request) bool {
	if why := crossSite(r); why != "" {
		httpapi.WriteError(w, http.StatusForbidden, "cross-site request refused: "+why+"; use the status page itself")
		return true
	}
	return false
}

// secure reports whether the browser reached us over TLS.
func secure(r *http.Request) bool {
	return r.TLS != nil || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https")
}

func (p *Page) signIn(w http.ResponseWriter, r *http.Request) {
	if refuseCrossSite(w, r) {
		return
	}
	var req struct {
		Token string `json:"token"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&req); err != nil {
		httpapi.WriteError(w, http.StatusBadRequest, `want {"token": "<http.admin_token>"}: `+err.Error())
		return
	}
	if subtle.ConstantTimeCompare([]byte(req.Token), []byte(p.o.Token)) != 1 {
		p.log.Warn("status page: sign-in with a wrong token", "remote", r.RemoteAddr)
		httpapi.WriteError(w, http.StatusUnauthorized, "wrong token: sign in with the relay's http.admin_token")
		return
	}
	s := p.sessions.create()
	http.SetCookie(w, &http.Cookie{
		Name: CookieName, Value: s.id, Path: "/",
		Expires: s.expires, MaxAge: int(p.o.SessionTTL / time.Second),
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: secure(r),
	})
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"signedIn": true, "csrf": s.csrf, "expires": s.expires.UTC()})
}

func (p *Page) signOut(w http.ResponseWriter, r *http.Request) {
	if refuseCrossSite(w, r) {
		return
	}
	if s, ok := p.current(r); ok {
		if !s.checkCSRF(r.Header.Get("X-CSRF-Token")) {
			httpapi.WriteError(w, http.StatusForbidden, "missing or wrong X-CSRF-Token; reload the page")
			return
		}
		p.sessions.end(s.id)
	}
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: secure(r)})
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"signedIn": false})
}

// actions maps a page action to the admin route that does it.
var actions = map[string]struct{ method, path string }{
	"replay":   {http.MethodPost, "/v1/dlq/%s/replay"},
	"watch":    {http.MethodPut, "/v1/watches/builds/%s"},
	"unwatch":  {http.MethodDelete, "/v1/watches/builds/%s"},
	"activity": {http.MethodPost, "/v1/vms/%s/activity"},
}

// action runs an admin handler for a signed-in page: POST
// /ui/actions/{replay|watch|unwatch|activity}/{id}, same origin, with the
// session's CSRF token.
func (p *Page) action(w http.ResponseWriter, r *http.Request) {
	if refuseCrossSite(w, r) {
		return
	}
	s, ok := p.current(r)
	if !ok {
		httpapi.WriteError(w, http.StatusUnauthorized, "not signed in (or the session expired); sign in again")
		return
	}
	if !s.checkCSRF(r.Header.Get("X-CSRF-Token")) {
		httpapi.WriteError(w, http.StatusForbidden, "missing or wrong X-CSRF-Token; reload the page")
		return
	}
	v := mux.Vars(r)
	a, ok := actions[v["action"]]
	if !ok {
		httpapi.WriteError(w, http.StatusNotFound, "no action "+v["action"]+"; use replay, watch, unwatch or activity")
		return
	}
	ar, err := http.NewRequestWithContext(r.Context(), a.method, fmt.Sprintf(a.path, url.PathEscape(v["id"])), http.NoBody)
	if err != nil {
		httpapi.WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	ar.RemoteAddr = r.RemoteAddr
	p.log.Info("status page action", "action", v["action"], "id", v["id"], "remote", r.RemoteAddr)
	p.o.HTTP.ServeAdmin(w, ar)
	p.hub.refreshSoon(true)
}

// adminGet runs GET path on the admin routes and returns its JSON body, or
// {"error": ...} with the status when it is not 200.
func (p *Page) adminGet(ctx context.Context, path string) json.RawMessage {
	r, err := http.NewRequestWithContext(ctx, http.MethodGet, path, http.NoBody)
	if err != nil {
		return errorJSON(err.Error())
	}
	w := &bufferWriter{h: http.Header{}, max: 8 << 20}
	p.o.HTTP.ServeAdmin(w, r)
	if w.code != 0 && w.code != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		_ = json.Unmarshal(w.buf.Bytes(), &e)
		if e.Error == "" {
			e.Error = http.StatusText(w.code)
		}
		return errorJSON(e.Error)
	}
	if w.over {
		return errorJSON(path + " answered more than 8 MiB")
	}
	return json.RawMessage(bytes.TrimSpace(w.buf.Bytes()))
}

func errorJSON(msg string) json.RawMessage {
	b, _ := json.Marshal(map[string]string{"error": msg})
	return b
}

// bufferWriter keeps an admin handler's answer, up to max bytes.
type bufferWriter struct {
	h    http.Header
	code int
	buf  bytes.Buffer
	max  int
	over bool
}

func (b *bufferWriter) Header() http.Header { return b.h }
func (b *bufferWriter) WriteHeader(code int) {
	if b.code == 0 {
		b.code = code
	}
}
func (b *bufferWriter) Write(p []byte) (int, error) {
	if b.code == 0 {
		b.code = http.StatusOK
	}
	if b.buf.Len()+len(p) > b.max {
		b.over = true
		return 0, errors.New("answer too large")
	}
	return b.buf.Write(p)
}
