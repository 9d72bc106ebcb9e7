package sinks

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cakework-relay/cakework-relay/internal/bus"
	"github.com/cakework-relay/cakework-relay/internal/clock"
	"github.com/cakework-relay/cakework-relay/internal/httpapi"
	"github.com/cakework-relay/cakework-relay/internal/state"
)

// ManagerOptions are the dependencies every runner of a Manager shares.
type ManagerOptions struct {
	Bus   *bus.Bus
	Store *state.Store
	// Records, Member and PinnedTTL are given to every runner (a fleet
	// member's; see Options).
	Records    Records
	Member     string
	PinnedTTL  time.Duration
	Clock      clock.Clock
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// ReplayWait bounds how long POST /v1/dlq/{id}/replay waits for the
	// outcome before answering 202 in-progress. Default 20s (under the
	// HTTP server's write timeout).
	ReplayWait time.Duration
}

// Manager owns the runners of all sinks, the DLQ admin routes and the
// status section. It is an app component: Name, Start, Stop.
type Manager struct {
	o       ManagerOptions
	log     *slog.Logger
	metrics *Metrics

	mu      sync.Mutex
	runners []*Runner
	byName  map[string]*Runner
}

// NewManager builds an empty manager; Add the sinks, then Start.
func NewManager(o ManagerOptions) *Manager {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.ReplayWait <= 0 {
		o.ReplayWait = 20 * time.Second
	}
	return &Manager{o: o, log: o.Logger, metrics: NewMetrics(o.Registerer), byName: map[string]*Runner{}}
}

// Add registers a sink. Bus, Store, Clock, Logger (scoped to the sink) and
// Metrics left empty in o come from the manager. Call before Start.
func (m *Manager) Add(s Sender, o Options) (*Runner, error) {
	if o.Bus == nil {
		o.Bus = m.o.Bus
	}
	if o.Store == nil {
		o.Store = m.o.Store
	}
	if o.Records == nil {
		o.Records = m.o.Records
	}
	if o.Member == "" {
		o.Member = m.o.Member
	}
	if o.PinnedTTL == 0 {
		o.PinnedTTL = m.o.PinnedTTL
	}
	if o.Clock == nil {
		o.Clock = m.o.Clock
	}
	if o.Logger == nil {
		o.Logger = m.o.Logger.With("sink", o.Name, "kind", o.Kind)
	}
	if o.Metrics == nil {
		o.Metrics = m.metrics
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, dup := m.byName[o.Name]; dup {
		return nil, fmt.Errorf("sinks: two sinks named %q; names must be unique", o.Name)
	}
	r, err := NewRunner(s, o)
	if err != nil {
		return nil, err
	}
	m.runners = append(m.runners, r)
	m.byName[o.Name] = r
	return r, nil
}

// Runner returns the runner of a sink, or nil.
func (m *Manager) Runner(name string) *Runner {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.byName[name]
}

func (m *Manager) list() []*Runner {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]*Runner(nil), m.runners...)
}

// Name is the component name.
func (m *Manager) Name() string { return "sinks" }

// Start starts every runner; on failure every runner is stopped: the ones
// started, and the others so their senders' background work (Slack's
// flusher) ends too.
func (m *Manager) Start(ctx context.Context) error {
	rs := m.list()
	for _, r := range rs {
		if err := r.Start(ctx); err != nil {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = m.Stop(sctx)
			cancel()
			return err
		}
	}
	return nil
}

// Stop stops every runner in parallel, bounded by ctx.
func (m *Manager) Stop(ctx context.Context) error {
	rs := m.list()
	errs := make([]error, len(rs))
	var wg sync.WaitGroup
	for i, r := range rs {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = r.Stop(ctx) }()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Status is the "sinks" section of GET /v1/status, keyed by sink name.
func (m *Manager) Status() map[string]Status {
	out := map[string]Status{}
	for _, r := range m.list() {
		out[r.Name()] = r.Status()
	}
	return out
}

// Register mounts GET /dlq and POST /dlq/{id}/replay on the admin router,
// and adds the "sinks" status section and degraded check.
func (m *Manager) Register(h *httpapi.Server) {
	m.Mount(h.Admin())
	h.AddStatus("sinks", func() any { return m.Status() })
	h.AddDegradedCheck("sinks", m.Degraded)
}

// Degraded lists every sink whose target is failing.
func (m *Manager) Degraded() error {
	var errs []error
	for _, r := range m.list() {
		errs = append(errs, r.Degraded())
	}
	return errors.Join(errs...)
}

// Mount adds the DLQ routes to r (the /v1 admin subrouter).
func (m *Manager) Mount(r *mux.Router) {
	r.HandleFunc("/dlq", m.handleList).Methods(http.MethodGet)
	r.HandleFunc("/dlq/{id}/replay", m.handleReplay).Methods(http.MethodPost)
}

// ListResponse is the body of GET /v1/dlq.
type ListResponse struct {
	DeadLetters []DeadLetter `json:"deadLetters"`
	Count       int          `json:"count"`
	// Truncated is set when limit cut the list.
	Truncated bool `json:"truncated,omitempty"`
}

func (m *Manager) handleList(w http.ResponseWriter, req *http.Request) {
	limit := 1000
	if s := req.URL.Query().Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			httpapi.WriteError(w, http.StatusBadRequest, "limit must be a positive number")
			return
		}
		limit = n
	}
	dls, more, err := ListDLQ(req.Context(), m.o.Bus, req.URL.Query().Get("sink"), limit)
	if err != nil {
		httpapi.WriteError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, ListResponse{DeadLetters: dls, Count: len(dls), Truncated: more})
}

// Replay re-sends dead letter id to its sink and waits for the outcome
// until ctx ends (then Outcome is in-progress).
func (m *Manager) Replay(ctx context.Context, id uint64) (ReplayResult, error) {
	stream, msg, err := getDLQ(ctx, m.o.Bus, id)
	if err != nil {
		return ReplayResult{ID: id}, err
	}
	d := deadLetterFrom(msg)
	r := m.Runner(d.Sink)
	if r == nil {
		return ReplayResult{ID: id, Sink: d.Sink}, fmt.Errorf("dead letter %d belongs to sink %q: %w", id, d.Sink, ErrSinkUnknown)
	}
	return r.replay(ctx, stream, msg)
}

func (m *Manager) handleReplay(w http.ResponseWriter, req *http.Request) {
	id, err := strconv.ParseUint(mux.Vars(req)["id"], 10, 64)
	if err != nil || id == 0 {
		httpapi.WriteError(w, http.StatusBadRequest, "the dead letter id is a positive number (the id column of GET /v1/dlq)")
		return
	}
	ctx, cancel := context.WithTimeout(req.Context(), m.o.ReplayWait)
	defer cancel()
	res, err := m.Replay(ctx, id)
	switch {
	case errors.Is(err, ErrDLQNotFound):
		httpapi.WriteError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, ErrReplayBusy), errors.Is(err, ErrSinkDisabled), errors.Is(err, ErrSinkUnknown):
		httpapi.WriteError(w, http.StatusConflict, err.Error())
	case errors.Is(err, ErrNotReplayable):
		httpapi.WriteError(w, http.StatusUnprocessableEntity, err.Error())
	case err != nil:
		httpapi.WriteError(w, http.StatusServiceUnavailable, err.Error())
	case res.Outcome == ReplayInProgress:
		httpapi.WriteJSON(w, http.StatusAccepted, res)
	case res.Outcome == ReplayInterrupted:
		httpapi.WriteJSON(w, http.StatusServiceUnavailable, res)
	default:
		httpapi.WriteJSON(w, http.StatusOK, res)
	}
}
