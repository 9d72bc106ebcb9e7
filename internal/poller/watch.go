package poller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/gorilla/mux"
	"github.com/nats-io/nats.go"

	"github.com/cakework-relay/cakework-relay/internal/bus"
	"github.com/cakework-relay/cakework-relay/internal/event"
	"github.com/cakework-relay/cakework-relay/internal/health"
	"github.com/cakework-relay/cakework-relay/internal/httpapi"
	"github.com/cakework-relay/cakework-relay/internal/state"
)

// NATS request-reply subjects that watch and unwatch a build: request
// {"id": "..."}, reply {"ok": true} or {"error": "..."}.
const (
	WatchBuildSubject   = "relay.watch.build"
	UnwatchBuildSubject = "relay.unwatch.build"
)

// Watch sources.
const (
	SourceConfig = "config"
	SourceAdmin  = "admin"
	SourceNATS   = "nats"
)

// ErrBadID is returned for ids that cannot be a subject token.
var ErrBadID = errors.New("invalid id")

// Watch starts following a build (kind state.KindBuild) or a function
// build's log (state.KindFunctionBuild). It reports whether the watch is
// new; an existing watch keeps its source and time.
func (p *Poller) Watch(ctx context.Context, kind, id, source string) (added bool, err error) {
	if err := p.beforeWatchChange(ctx, kind, id); err != nil {
		return false, err
	}
	now := p.clk.Now().UTC()
	err = p.store.Update(ctx, func(tx Tx) error {
		_, ok, err := tx.GetWatch(kind, id)
		if err != nil {
			return err
		}
		added = !ok
		if ok {
			return nil
		}
		if kind == state.KindBuild {
			n, err := tx.WatchCount(kind)
			if err != nil {
				return err
			}
			if n >= p.cfg.Builds.MaxWatched {
				added = false
				return fmt.Errorf("%w (%d builds, poller.builds.max_watched); unwatch some or raise it", ErrWatchListFull, n)
			}
		}
		return tx.PutWatch(kind, id, state.Watch{Source: source, AddedAt: now})
	})
	return added, err
}

// beforeWatchChange checks kind and id and applies the watches queued
// before a watch is added or removed.
func (p *Poller) beforeWatchChange(ctx context.Context, kind, id string) error {
	if err := checkKind(kind); err != nil {
		return err
	}
	if err := event.CheckToken(kind+" id", id); err != nil {
		return fmt.Errorf("%w: %w", ErrBadID, err)
	}
	return p.applyQueuedWatches(ctx)
}

// Unwatch stops following kind/id and reports whether it was watched. The
// log cursor stays: watching it again resumes where it stopped.
func (p *Poller) Unwatch(ctx context.Context, kind, id string) (removed bool, err error) {
	return p.unwatch(ctx, kind, id, "")
}

// unwatch deletes the watch; with source set, only a watch made from that
// source.
func (p *Poller) unwatch(ctx context.Context, kind, id, source string) (removed bool, err error) {
	if err := p.beforeWatchChange(ctx, kind, id); err != nil {
		return false, err
	}
	err = p.store.Update(ctx, func(tx Tx) error {
		if source != "" {
			w, ok, err := tx.GetWatch(kind, id)
			if err != nil || !ok || w.Source != source {
				removed = false
				return err
			}
		}
		var err error
		removed, err = tx.DeleteWatch(kind, id)
		return err
	})
	return removed, err
}

func checkKind(kind string) error {
	if kind != state.KindBuild && kind != state.KindFunctionBuild {
		return fmt.Errorf("poller: cannot watch kind %q", kind)
	}
	return nil
}

// WatchInfo is one watch as GET /v1/watches shows it.
type WatchInfo struct {
	ID      string    `json:"id"`
	Source  string    `json:"source"`
	AddedAt time.Time `json:"addedAt"`
	// Status is the build's last known status ("" when not yet seen).
	Status string `json:"status,omitempty"`
}

// WatchList is GET /v1/watches.
type WatchList struct {
	Builds         []WatchInfo `json:"builds"`
	FunctionBuilds []WatchInfo `json:"functionBuilds"`
}

// Watches lists what is watched.
func (p *Poller) Watches() (WatchList, error) {
	out := WatchList{Builds: []WatchInfo{}, FunctionBuilds: []WatchInfo{}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.applyQueuedWatches(ctx); err != nil {
		return out, err
	}
	err := p.store.View(func(tx Tx) error {
		for _, k := range []string{state.KindBuild, state.KindFunctionBuild} {
			ws, err := tx.Watches(k)
			if err != nil {
				return err
			}
			for id, w := range ws {
				wi := WatchInfo{ID: id, Source: w.Source, AddedAt: w.AddedAt}
				if k == state.KindBuild {
					if st, ok, _ := tx.GetBuild(id); ok {
						wi.Status = st.Status
					}
					out.Builds = append(out.Builds, wi)
				} else {
					out.FunctionBuilds = append(out.FunctionBuilds, wi)
				}
			}
		}
		return nil
	})
	for _, l := range [][]WatchInfo{out.Builds, out.FunctionBuilds} {
		sort.Slice(l, func(i, j int) bool { return l[i].ID < l[j].ID })
	}
	return out, err
}

// Register mounts the admin routes (GET /v1/watches, PUT|DELETE
// /v1/watches/builds/{id} and /v1/watches/function-builds/{id}), the
// "cakework" readiness check and the "poller" status section.
func (p *Poller) Register(srv *httpapi.Server) {
	a := srv.Admin()
	a.HandleFunc("/watches", p.handleList).Methods(http.MethodGet)
	for path, kind := range map[string]string{"builds": state.KindBuild, "function-builds": state.KindFunctionBuild} {
		a.HandleFunc("/watches/"+path+"/{id}", p.handleWatch(kind)).Methods(http.MethodPut, http.MethodDelete)
	}
	srv.AddReadyCheck("cakework", p.Ready)
	srv.AddDegradedCheck("poller", p.Degraded)
	srv.AddStatus("poller", func() any { return p.Status() })
}

// Remote is the leader of a fleet, seen from any member: the admin API's
// watch requests go there (internal/cluster forwards them over NATS).
type Remote interface {
	Watch(ctx context.Context, kind, id, source string) (added bool, err error)
	Unwatch(ctx context.Context, kind, id string) (removed bool, err error)
	Watches(ctx context.Context) (WatchList, error)
}

func (p *Poller) handleList(w http.ResponseWriter, r *http.Request) {
	var l WatchList
	var err error
	if p.o.Remote != nil {
		l, err = p.o.Remote.Watches(r.Context())
	} else {
		l, err = p.Watches()
	}
	if err != nil {
		httpapi.WriteError(w, http.StatusServiceUnavailable, "cannot read watches: "+err.Error())
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, l)
}

func (p *Poller) handleWatch(kind string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id := mux.Vars(r)["id"]
		if err := event.CheckToken(kind+" id", id); err != nil {
			httpapi.WriteError(w, http.StatusBadRequest, err.Error())
			return
		}
		if r.Method == http.MethodDelete {
			unwatch := p.Unwatch
			if p.o.Remote != nil {
				unwatch = p.o.Remote.Unwatch
			}
			removed, err := unwatch(r.Context(), kind, id)
			switch {
			case err != nil:
				httpapi.WriteError(w, http.StatusServiceUnavailable, "cannot remove the watch: "+err.Error())
			case !removed:
				httpapi.WriteError(w, http.StatusNotFound, fmt.Sprintf("%s %s is not watched", kind, id))
			default:
				httpapi.WriteJSON(w, http.StatusOK, map[string]any{"ok": true, "id": id, "kind": kind, "removed": true})
			}
			return
		}
		watch := p.Watch
		if p.o.Remote != nil {
			watch = p.o.Remote.Watch
		}
		added, err := watch(r.Context(), kind, id, SourceAdmin)
		// (The fleet's leader refuses in text.)
		if errors.Is(err, ErrWatchListFull) || err != nil && strings.Contains(err.Error(), ErrWatchListFull.Error()) {
			httpapi.WriteError(w, http.StatusConflict, "cannot add the watch: "+err.Error())
			return
		}
		if err != nil {
			httpapi.WriteError(w, http.StatusServiceUnavailable, "cannot add the watch: "+err.Error())
			return
		}
		status := http.StatusOK
		if added {
			status = http.StatusCreated
		}
		httpapi.WriteJSON(w, status, map[string]any{"ok": true, "id": id, "kind": kind, "added": added})
	}
}

// natsWatch serves relay.watch.build: an id already watched is fine.
func (p *Poller) natsWatch(ctx context.Context, id string) error {
	_, err := p.Watch(ctx, state.KindBuild, id, SourceNATS)
	return err
}

// natsUnwatch serves relay.unwatch.build. It removes only a watch made
// over NATS: whoever holds bus.embedded.control_token (or, on an external
// NATS, may publish there) must not silence a build a webhook or the admin
// API asked to follow. The answer is the same whether the build is not watched or
// watched from elsewhere, so it does not tell which builds are watched.
func (p *Poller) natsUnwatch(ctx context.Context, id string) error {
	removed, err := p.unwatch(ctx, state.KindBuild, id, SourceNATS)
	if err == nil && !removed {
		err = fmt.Errorf("build %s is not watched over NATS; nothing to unwatch (a watch made by a webhook or the admin API is removed with DELETE /v1/watches/builds/%s)", id, id)
	}
	return err
}

// natsBuildRequest turns do into a request-reply handler: request
// {"id": "<build id>"}, reply {"ok": true} or {"error": "..."}.
func natsBuildRequest(do func(ctx context.Context, id string) error) nats.MsgHandler {
	return func(m *nats.Msg) {
		if !bus.FromClient(m) {
			return // the stream delivered to this subject by a consumer
		}
		reply := func(v any) {
			if m.Reply == "" {
				return
			}
			b, _ := json.Marshal(v)
			_ = m.Respond(b)
		}
		var req struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal(m.Data, &req); err != nil {
			reply(map[string]string{"error": `want {"id": "<build id>"}: ` + err.Error()})
			return
		}
		if req.ID == "" {
			reply(map[string]string{"error": `id is missing; send {"id": "<build id>"}`})
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := do(ctx, req.ID); err != nil {
			reply(map[string]string{"error": err.Error()})
			return
		}
		reply(map[string]bool{"ok": true})
	}
}

// RegisterOff mounts the watch routes for a relay whose poller is off: they
// answer 503 with the reason instead of 404.
func RegisterOff(srv *httpapi.Server, reason string) {
	off := func(w http.ResponseWriter, _ *http.Request) {
		httpapi.WriteError(w, http.StatusServiceUnavailable, "the poller is off: "+reason)
	}
	a := srv.Admin()
	a.HandleFunc("/watches", off).Methods(http.MethodGet)
	a.HandleFunc("/watches/builds/{id}", off).Methods(http.MethodPut, http.MethodDelete)
	a.HandleFunc("/watches/function-builds/{id}", off).Methods(http.MethodPut, http.MethodDelete)
}

// applyQueuedWatches folds the watches ingest queued (state.Tx.QueueWatch)
// into the watch list, so a build seen by webhook is polled and tailed from
// the next tick on; past poller.builds.max_watched they are refused.
func (p *Poller) applyQueuedWatches(ctx context.Context) error {
	n, refused, err := p.store.ApplyWatchQueue(ctx, p.cfg.Builds.MaxWatched)
	if refused > 0 {
		p.watchesFull(refused)
	}
	if err != nil {
		return fmt.Errorf("watches: %w", err)
	}
	if n > 0 {
		p.log.Debug("watches added from webhooks", "n", n)
	}
	return p.countWatches()
}

// countWatches updates the watched-builds count (/v1/status, metrics). The
// list is capped, so the walk is bounded.
func (p *Poller) countWatches() error {
	var n int
	if err := p.store.View(func(tx Tx) error {
		var err error
		n, err = tx.WatchCount(state.KindBuild)
		return err
	}); err != nil {
		return fmt.Errorf("watches: count: %w", err)
	}
	p.watched.Store(int64(n))
	p.m.watched.Set(float64(n))
	return nil
}

// watchesFull counts build watches refused at the cap and says so at most
// every health.DefaultRepeat.
func (p *Poller) watchesFull(n int) {
	p.refused.Add(int64(n))
	p.m.watchesRefused.Add(float64(n))
	now := p.clk.Now()
	p.warnMu.Lock()
	quiet := !p.fullLogAt.IsZero() && now.Sub(p.fullLogAt) < health.DefaultRepeat
	if !quiet {
		p.fullLogAt = now
	}
	p.warnMu.Unlock()
	if !quiet {
		p.log.Warn("the build watch list is full; builds seen by webhook past it are published but not polled or tailed: raise poller.builds.max_watched or let watched builds finish",
			"max_watched", p.cfg.Builds.MaxWatched, "refused_total", p.refused.Load())
	}
}

// ErrWatchListFull is returned by Watch for a build past
// poller.builds.max_watched.
var ErrWatchListFull = errors.New("the build watch list is full")

// forget drops what the poller keeps in memory about a resource that is no
// longer watched or tailed: its backoff and its 404 time.
func (p *Poller) forget(keys ...string) {
	p.backoffMu.Lock()
	for _, k := range keys {
		delete(p.backoffs, k)
	}
	p.backoffMu.Unlock()
}
