package ingest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cakework-relay/cakework-relay/internal/clock"
	"github.com/cakework-relay/cakework-relay/internal/confcheck"
	"github.com/cakework-relay/cakework-relay/internal/event"
	"github.com/cakework-relay/cakework-relay/internal/httpapi"
	"github.com/cakework-relay/cakework-relay/internal/state"
)

// CakeworkReceiver is the receiver name of the Cakework build webhooks (its
// seen ids and metrics go under this name).
const CakeworkReceiver = "cakework"

// Retry-After values, in seconds.
const (
	retryOutboxFull = "5"
	retryState      = "10"
	retryOff        = "60"
	retryInFlight   = "1"
)

// maxPooledBuf is the largest body buffer that goes back to the pool: a
// flood of large bodies must not leave large buffers behind.
const maxPooledBuf = 64 << 10

// Options configure New.
type Options struct {
	// Config gets its defaults (Config.WithDefaults) and must pass
	// Config.Validate.
	Config Config
	// MaxBodyBytes bounds a request body (http.max_body_bytes); larger ones
	// get 413. Default 1 MiB.
	MaxBodyBytes int64
	// MaxBodyBytesInFlight caps the body bytes held by all requests at once
	// (http.max_body_bytes_in_flight); past it a request gets 503 with
	// Retry-After before its body is read. Default 32 MiB.
	MaxBodyBytesInFlight int64
	SubjectPrefix        string
	// IDs derives event ids (zero: the legacy unkeyed scheme).
	IDs        event.IDs
	Store      Store
	Clock      clock.Clock
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// WatchBuilds queues a poller watch for every build seen by webhook. Set
	// it when the poller runs; without one nothing would empty the queue.
	WatchBuilds bool
	// Fleet, when set (cluster.enabled), is where webhooks are committed
	// instead of Store.Accept: see Fleet.
	Fleet Fleet
	// MaxQueuedWatches stops queueing watches while this many wait for the
	// poller to fold them in (poller.builds.max_watched; 0: no bound): a
	// poller tick that runs long must not let the queue grow with every
	// webhook. The webhook is still accepted and published.
	MaxQueuedWatches int
}

// Store is what ingest needs of the relay's state; *state.Store implements
// it. Every write goes through Accept: one journal batch per group of
// requests, with the webhook operations of state.AcceptTx (the only ones:
// ids, change marks, queued watches, events).
type Store interface {
	// Ready is nil while the store takes writes.
	Ready() error
	// OutboxDepth is how many events wait for the bus (the backpressure
	// limit).
	OutboxDepth() int
	// QueuedWatches is how many queued watches the poller has not folded
	// in yet.
	QueuedWatches() int
	// BuildRecord reads the build state the poller recorded: bad is a
	// record that does not decode, err the store's failure.
	BuildRecord(id string) (b state.BuildState, known bool, bad, err error)
	// Accept runs fn in the next journal batch and returns once its
	// changes are durable.
	Accept(ctx context.Context, fn func(*state.AcceptTx) error) error
}

// Ingest receives webhooks and commits their events to the outbox.
type Ingest struct {
	o        Options
	log      *slog.Logger
	clock    clock.Clock
	store    Store
	prefix   string
	maxBody  int64
	limit    int
	seenTTL  time.Duration
	cakework *receiver
	generic  []*receiver
	unknown  *receiver
	busyLog  everyMinute
	metrics  *metrics
	bufs     sync.Pool
	inFlight bodyBudget
}

// receiver is one webhook endpoint's settings and metrics.
type receiver struct {
	name    string
	authLog everyMinute
	// off, when set, is why the receiver answers 503 to everything.
	off  string
	auth *auth
	obs  observer
}

// New checks the receivers' auth and builds the handlers. A receiver that is
// configured with no auth and without insecure_no_auth is an error naming
// it: the relay must not start wide open by accident.
func New(o Options) (*Ingest, error) {
	if o.Store == nil {
		return nil, errors.New("ingest: no state store")
	}
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = 1 << 20
	}
	if o.MaxBodyBytesInFlight <= 0 {
		o.MaxBodyBytesInFlight = 32 << 20
	}
	if o.MaxBodyBytesInFlight < o.MaxBodyBytes {
		return nil, fmt.Errorf("ingest: http.max_body_bytes_in_flight (%d) is less than http.max_body_bytes (%d); raise it", o.MaxBodyBytesInFlight, o.MaxBodyBytes)
	}
	if o.SubjectPrefix == "" {
		o.SubjectPrefix = "cakework"
	}
	// The rules are Config.Validate's, the same check-config applies.
	o.Config = o.Config.WithDefaults()
	c := o.Config
	if err := confcheck.Check("ingest", c.Validate); err != nil {
		return nil, err
	}
	in := &Ingest{
		o: o, log: o.Logger.With("component", "ingest"), clock: o.Clock, store: o.Store,
		prefix: o.SubjectPrefix, maxBody: o.MaxBodyBytes, limit: c.OutboxLimit, seenTTL: c.SeenTTL,
	}
	in.bufs.New = func() any { b := make([]byte, 0, 4096); return &b }
	in.inFlight.max = o.MaxBodyBytesInFlight

	var errs []error
	ck := c.Cakework
	in.cakework = &receiver{name: CakeworkReceiver}
	if !ck.Configured && ck.Secret == "" && ck.Token == "" && !ck.InsecureNoAuth {
		in.cakework.off = "the Cakework webhook receiver is off: set " + EnvWebhookSecret + " or ingest.cakework.secret"
		in.cakework.auth = &auth{}
	} else if a, err := newAuth("ingest.cakework", ck.Secret, ck.Token, nil, c.TimestampTolerance); err != nil {
		errs = append(errs, err)
	} else {
		in.cakework.auth = a
	}
	for i, wc := range c.Webhooks {
		label := fmt.Sprintf("ingest.webhooks[%d] (%s)", i, wc.Name)
		a, err := newAuth(label, wc.Secret, wc.Token, wc.HMAC, c.TimestampTolerance)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		in.generic = append(in.generic, &receiver{name: wc.Name, auth: a})
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("ingest: %w", err)
	}
	m, err := newMetrics(o.Registerer)
	if err != nil {
		return nil, fmt.Errorf("ingest: metrics: %w", err)
	}
	in.metrics = m
	in.inFlight.gauge = m.inFlight
	in.cakework.obs = m.forReceiver(CakeworkReceiver)
	for _, r := range in.generic {
		r.obs = m.forReceiver(r.name)
	}
	in.unknown = &receiver{name: "unknown", obs: m.forReceiver("unknown")}
	if in.cakework.off != "" {
		in.log.Info(in.cakework.off)
	} else if in.cakework.auth.none() {
		in.log.Warn("the Cakework webhook receiver accepts requests without auth (insecure_no_auth)")
	}
	for _, r := range in.generic {
		if r.auth.none() {
			in.log.Warn("webhook receiver accepts requests without auth (insecure_no_auth)", "receiver", r.name)
		}
	}
	return in, nil
}

// Name implements app.Component.
func (in *Ingest) Name() string { return "ingest" }

// Start implements app.Component. The handlers are live once mounted and the
// HTTP server runs; there is nothing in the background.
func (in *Ingest) Start(context.Context) error { return nil }

// Stop implements app.Component. In-flight requests finish with the HTTP
// server's shutdown, which the app runs first.
func (in *Ingest) Stop(context.Context) error { return nil }

// Mount adds the receivers' routes to r.
func (in *Ingest) Mount(r Router) {
	r.HandleExact(http.MethodPost, "/webhooks/cakework", func(w http.ResponseWriter, req *http.Request) {
		in.serve(w, req, in.cakework, "")
	})
	for _, status := range []string{statusSucceeded, statusFailed} {
		r.HandleExact(http.MethodPost, "/webhooks/cakework/build/"+status, func(w http.ResponseWriter, req *http.Request) {
			in.serve(w, req, in.cakework, status)
		})
	}
	for _, rc := range in.generic {
		r.HandleExact(http.MethodPost, "/webhooks/"+rc.name, func(w http.ResponseWriter, req *http.Request) {
			in.serve(w, req, rc, "")
		})
	}
	r.Router().HandleFunc("/webhooks/{name}", func(w http.ResponseWriter, req *http.Request) {
		in.serve(w, req, in.unknown, "")
	}).Methods(http.MethodPost)
}

// Router is where Mount puts the receivers (httpapi.Server).
type Router interface {
	HandleExact(method, path string, h http.HandlerFunc)
	Router() *mux.Router
}

// The answers to requests not yet authenticated: the same for every
// receiver name, known or not, whatever the relay's state.
const (
	msgUnauthorized = "unauthorized: the signature or token is missing or wrong for this receiver (the relay's log says which)"
	msgBusy         = "the relay cannot accept webhooks right now; retry later"
)

// everyMinute runs f at most once a minute.
type everyMinute struct {
	mu   sync.Mutex
	last time.Time
}

func (e *everyMinute) Do(now time.Time, f func()) {
	e.mu.Lock()
	if !e.last.IsZero() && now.Sub(e.last) < time.Minute && now.Sub(e.last) > -time.Minute {
		e.mu.Unlock()
		return
	}
	e.last = now
	e.mu.Unlock()
	f()
}

// answer is the outcome of one request, before it is written.
type answer struct {
	status     int
	outcome    outcome
	id         string
	msg        string
	retryAfter string
}

func fail(status int, oc outcome, msg string) answer {
	return answer{status: status, outcome: oc, msg: msg}
}

func (in *Ingest) serve(w http.ResponseWriter, r *http.Request, rc *receiver, pathStatus string) {
	start := time.Now()
	bp := in.bufs.Get().(*[]byte)
	a := in.handle(r, rc, pathStatus, bp)
	in.write(w, a, bp)
	if cap(*bp) <= maxPooledBuf {
		*bp = (*bp)[:0]
		in.bufs.Put(bp)
	}
	rc.obs.done(a.outcome, time.Since(start))
}

func (in *Ingest) handle(r *http.Request, rc *receiver, pathStatus string, bp *[]byte) answer {
	// Before auth nothing is said about the relay's state or its
	// receivers: an unknown name goes through the same checks as a known
	// one and ends in the same 401; a failing state store or a full outbox
	// gets the same generic 503 (the log has the details).
	if rc.off != "" {
		a := fail(http.StatusServiceUnavailable, outOff, rc.off)
		a.retryAfter = retryOff
		return a
	}
	// Refuse early and cheaply under backpressure: no body read, no tx.
	if err := in.store.Ready(); err != nil {
		a := in.unavailable(err)
		a.msg = msgBusy
		return a
	}
	if d := in.store.OutboxDepth(); d >= in.limit {
		in.busyLog.Do(in.clock.Now(), func() {
			in.log.Warn("webhooks refused: the outbox is full; the bus is down or slow (raise ingest.outbox_limit to buffer more)",
				"depth", d, "outbox_limit", in.limit)
		})
		a := fail(http.StatusServiceUnavailable, outUnavailable, msgBusy)
		a.retryAfter = retryOutboxFull
		return a
	}
	if ct := hget(r.Header, hdrContentType); !isJSON(ct) {
		return fail(http.StatusUnsupportedMediaType, outUnsupported,
			fmt.Sprintf("Content-Type %q is not JSON; send the body as application/json", clip(ct)))
	}
	if r.ContentLength > in.maxBody {
		return in.tooLarge()
	}
	now := in.clock.Now()
	// Headers, timestamp and token before the body: a forged flood costs
	// no body bytes.
	if rc == in.unknown {
		// Answered as a known receiver whose auth failed, before the body.
		in.log.Debug("webhook refused: no receiver at this path; add one under ingest.webhooks", "path", clip(r.URL.Path))
		return fail(http.StatusUnauthorized, outNotFound, msgUnauthorized)
	}
	if msg := rc.auth.precheck(r, now); msg != "" {
		return in.refuseAuth(rc, msg, now)
	}
	// Reserve the body's bytes (the most it may be when its length is not
	// declared) in the budget shared by all requests.
	reserve := in.maxBody
	if r.ContentLength >= 0 {
		reserve = r.ContentLength
	}
	if !in.inFlight.acquire(reserve) {
		in.metrics.inFlightRefused.Inc()
		a := fail(http.StatusServiceUnavailable, outBusy,
			fmt.Sprintf("too many webhook body bytes in flight (http.max_body_bytes_in_flight %d); retry shortly", in.inFlight.max))
		a.retryAfter = retryInFlight
		return a
	}
	defer in.inFlight.release(reserve)
	if r.ContentLength > int64(cap(*bp)) {
		// Sized once, so the buffer holds what was reserved and no more.
		*bp = make([]byte, 0, r.ContentLength+1)
	}
	body, err := readBody(r.Body, *bp, in.maxBody)
	*bp = body[:0]
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.Is(err, errTooLarge) || errors.As(err, &mbe) {
			return in.tooLarge()
		}
		return fail(http.StatusBadRequest, outBadRequest, "could not read the request body: "+err.Error())
	}
	msg, signedID := rc.auth.check(r, body, now)
	if msg != "" {
		return in.refuseAuth(rc, msg, now)
	}
	if len(body) == 0 {
		return fail(http.StatusBadRequest, outBadRequest, "the body is empty; send a JSON object")
	}
	if msg := deliverable(body); msg != "" {
		return fail(http.StatusBadRequest, outBadRequest, msg)
	}
	deliveryID, a, ok := deliveryIDOf(r.Header, rc == in.cakework)
	if !ok {
		return a
	}
	if rc == in.cakework {
		return in.cakeworkBuild(r.Context(), body, pathStatus, deliveryID, now)
	}
	if !signedID && !rc.auth.none() {
		// A delivery id the signature does not cover can be changed by
		// whoever replays the request: dedup on the body instead, for
		// seen_ttl (event.WebhookID of no delivery id is the body's hash).
		deliveryID = ""
	}
	return in.genericWebhook(r.Context(), rc, body, deliveryID, now)
}

func (in *Ingest) tooLarge() answer {
	return fail(http.StatusRequestEntityTooLarge, outTooLarge,
		fmt.Sprintf("the body is larger than %d bytes (http.max_body_bytes); send a smaller body or raise the limit", in.maxBody))
}

func (in *Ingest) unavailable(err error) answer {
	msg := "the state store is unavailable: " + err.Error() + "; retry later"
	if errors.Is(err, state.ErrClosed) {
		msg = "the state store is closed (the relay is shutting down); retry later"
	} else {
		in.log.Warn("webhook not accepted: state store failed", "err", err)
	}
	a := fail(http.StatusServiceUnavailable, outUnavailable, msg)
	a.retryAfter = retryState
	return a
}

// commitErr maps a failed Update to an answer. Nothing was committed.
func (in *Ingest) commitErr(ctx context.Context, err error) answer {
	if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		// The sender went away before the transaction was queued.
		return fail(http.StatusServiceUnavailable, outCanceled, "the request was canceled before it was committed; retry")
	}
	return in.unavailable(err)
}

// Delivery id headers, canonical. webhook-id comes first: it is what
// Standard Webhooks signs.
var deliveryHeaders = []string{hdrWebhookID, "X-Github-Delivery", "X-Gitlab-Event-Uuid", "Idempotency-Key"}

// deliveryIDOf returns the sender's id for this delivery, if it gave one.
// The Cakework receiver only looks at webhook-id.
func deliveryIDOf(h http.Header, cakework bool) (string, answer, bool) {
	hs := deliveryHeaders
	if cakework {
		hs = hs[:1]
	}
	for _, name := range hs {
		if v := hget(h, name); v != "" {
			if len(v) > maxDeliveryID {
				return "", fail(http.StatusBadRequest, outBadRequest,
					fmt.Sprintf("%s is %d bytes long; send at most %d", name, len(v), maxDeliveryID)), false
			}
			return v, answer{}, true
		}
	}
	return "", answer{}, true
}

var jsonCT = []string{"application/json"}

func (in *Ingest) write(w http.ResponseWriter, a answer, bp *[]byte) {
	if a.retryAfter != "" {
		w.Header()["Retry-After"] = []string{a.retryAfter}
	}
	if a.status != http.StatusAccepted && a.status != http.StatusOK {
		httpapi.WriteError(w, a.status, a.msg)
		return
	}
	// The success answers are the hot path: write them by hand. Event ids
	// are hex, so they need no escaping. A duplicate whose event is not
	// known has no id.
	b := append((*bp)[:0], '{')
	if a.id != "" {
		b = append(b, `"id":"`...)
		b = append(b, a.id...)
		b = append(b, '"')
		if a.status == http.StatusOK {
			b = append(b, ',')
		}
	}
	if a.status == http.StatusOK {
		b = append(b, `"duplicate":true`...)
	}
	b = append(b, '}')
	b = append(b, '\n')
	*bp = b
	h := w.Header()
	h[hdrContentType] = jsonCT
	w.WriteHeader(a.status)
	_, _ = w.Write(b)
}

// isJSON accepts a missing Content-Type (senders of unsigned webhooks often
// leave it out; the body must still parse as JSON), application/json and
// any application/*+json, with parameters.
func isJSON(ct string) bool {
	if ct == "" {
		return true
	}
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	ct = strings.TrimSpace(ct)
	const app = "application/"
	if len(ct) < len(app) || !strings.EqualFold(ct[:len(app)], app) {
		return false
	}
	sub := ct[len(app):]
	return strings.EqualFold(sub, "json") ||
		(len(sub) > len("+json") && strings.EqualFold(sub[len(sub)-len("+json"):], "+json"))
}

var errTooLarge = errors.New("body too large")

// readBody reads at most max bytes of r into buf (grown as needed).
func readBody(r io.Reader, buf []byte, max int64) ([]byte, error) {
	buf = buf[:0]
	for {
		if len(buf) == cap(buf) {
			if int64(len(buf)) > max {
				return buf, errTooLarge
			}
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if int64(len(buf)) > max {
			return buf, errTooLarge
		}
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

// refuseAuth answers a request whose auth failed with the generic 401. The
// reason (which header, which config key) is for the operator, not for
// whoever sent the request: it goes to the log, at debug level every time
// and at WARN at most once a minute a receiver.
func (in *Ingest) refuseAuth(rc *receiver, msg string, now time.Time) answer {
	in.log.Debug("webhook refused: "+msg, "receiver", rc.name)
	rc.authLog.Do(now, func() {
		in.log.Warn("webhooks refused: "+msg, "receiver", rc.name, "note", "logged at most once a minute a receiver; every refusal at debug level")
	})
	return fail(http.StatusUnauthorized, outUnauthorized, msgUnauthorized)
}
