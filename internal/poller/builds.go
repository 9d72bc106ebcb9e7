package poller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/cakework"
	"github.com/cakework-relay/cakework-relay/internal/event"
	"github.com/cakework-relay/cakework-relay/internal/state"
)

// buildData is a build event's data, the same shape ingest sends: the
// build as the API returned it, normalized, plus previousStatus and
// observedBy.
type buildData struct {
	cakework.Build
	PreviousStatus string `json:"previousStatus,omitempty"`
	ObservedBy     string `json:"observedBy"`
	// StuckAfter is set on build.stuck only.
	StuckAfter string `json:"stuckAfter,omitempty"`
}

// Defaults of poller.builds.max_watched and drop_unknown_after (the
// config's default tags; for a Config built in code).
const (
	DefaultMaxWatched       = 10000
	DefaultDropUnknownAfter = time.Hour
)

// watchPage is how many watches a tick reads at a time: its memory is
// bounded by a page, not by the watch list.
var watchPage = 500 // a var: tests page by 2

// pollBuilds calls getBuild for each watched build that is not finished,
// a page of watches at a time. A finished build is left to the logs
// schedule, which drops the watch once its log is drained (or at once here
// when build logs are not tailed).
func (p *Poller) pollBuilds(ctx context.Context) error {
	if err := p.applyQueuedWatches(ctx); err != nil {
		return err
	}
	var errs []error
	for after := ""; ; {
		var todo, finished []string
		var n int
		if err := p.store.View(func(tx Tx) error {
			todo, finished = todo[:0], finished[:0]
			ws, err := tx.WatchesPage(state.KindBuild, after, watchPage)
			if err != nil {
				return err
			}
			n = len(ws)
			for _, w := range ws {
				after = w.ID
				st, ok, err := tx.GetBuild(w.ID)
				if err == nil && ok && st.Finished() {
					finished = append(finished, w.ID)
					continue
				}
				todo = append(todo, w.ID)
			}
			return nil
		}); err != nil {
			return errors.Join(append(errs, fmt.Errorf("builds: read watches: %w", err))...)
		}
		if !p.cfg.Logs.Builds && len(finished) > 0 {
			if err := p.store.Update(ctx, func(tx Tx) error {
				for _, id := range finished {
					if _, err := tx.DeleteWatch(state.KindBuild, id); err != nil {
						return err
					}
				}
				return nil
			}); err != nil {
				return errors.Join(append(errs, fmt.Errorf("builds: drop finished: %w", err))...)
			}
		}
		if err := parallel(ctx, p.workers, todo, p.pollBuild); err != nil {
			errs = append(errs, err)
		}
		if n < watchPage || ctx.Err() != nil {
			return errors.Join(errs...)
		}
	}
}

func (p *Poller) pollBuild(ctx context.Context, id string) error {
	key := "getBuild/" + id
	if !p.due(key) || p.paused() {
		return nil
	}
	b, err := p.client.GetBuild(ctx, id)
	if err != nil {
		p.failed(key, err)
		if cakework.IsNotFound(err) {
			if d := p.notFoundFor(key); d >= p.cfg.Builds.DropUnknownAfter {
				return p.dropUnknown(ctx, id, d)
			}
			// Said once, when it is dropped: a flood of unknown builds
			// would otherwise log a line each, twice.
			p.log.Debug("watched build is unknown to Cakework; polling it with backoff until it appears, the watch is deleted, or poller.builds.drop_unknown_after passes",
				"build", id, "not_found_for", p.notFoundFor(key).Round(time.Second))
			return nil
		}
		return fmt.Errorf("getBuild %s: %w", id, err)
	}
	p.succeeded(key)
	if b.BuildID != id {
		p.warnOnce("buildid/"+id, "getBuild answered another build; ignored", "build", id, "got", clip(b.BuildID))
		return nil
	}
	if b.Status == "" || !event.ValidToken(b.Status) {
		p.warnOnce("buildstatus/"+id+"/"+b.Status, "getBuild answered a status that cannot be an event type; ignored", "build", id, "status", clip(b.Status))
		return nil
	}
	return p.applyBuild(ctx, b)
}

// dropUnknown drops the watch on a build Cakework has answered 404 for
// since drop_unknown_after, and says so once.
func (p *Poller) dropUnknown(ctx context.Context, id string, d time.Duration) error {
	var removed bool
	if err := p.store.Update(ctx, func(tx Tx) error {
		var err error
		removed, err = tx.DeleteWatch(state.KindBuild, id)
		return err
	}); err != nil {
		return fmt.Errorf("build %s: drop unknown: %w", id, err)
	}
	p.forget("getBuild/"+id, "logs/"+state.KindBuild+"/"+id)
	if removed {
		p.dropped.Add(1)
		p.m.watchesDropped.Inc()
		p.log.Warn("dropped the watch on a build Cakework does not know", "build", id,
			"not_found_for", d.Round(time.Second), "drop_unknown_after", p.cfg.Builds.DropUnknownAfter)
	}
	return nil
}

// applyBuild records what getBuild said and emits the change, deciding
// inside the transaction on the current BuildState. Ingest does not write
// BuildState; it remembers the changes it announced (state's
// ChangeAnnounced, for seen_ttl), and those are recorded here without a
// second event.
func (p *Poller) applyBuild(ctx context.Context, b cakework.Build) error {
	now := p.clk.Now().UTC()
	stuckAfter := p.cfg.Builds.StuckAfter
	var emitted int
	err := p.store.Update(ctx, func(tx Tx) error {
		emitted = 0
		prev, known, err := tx.GetBuild(b.BuildID)
		if err != nil {
			prev, known = state.BuildState{}, false
		}
		next := prev
		changed := !known
		type ev struct {
			action, id string
			at         time.Time
			data       buildData
		}
		var evs []ev
		newStatus := !known || prev.Status != b.Status
		if known && prev.Finished() && !b.Finished() {
			newStatus = false // a late "created" for a finished build
		}
		if newStatus {
			at := b.UpdatedAt
			if at.IsZero() {
				at = now
			}
			id := p.o.IDs.BuildStatusID(b.BuildID, b.Status)
			// A change a webhook announced is recorded, not announced again
			// (JetStream's dedup window may have passed).
			if !tx.ChangeAnnounced(id, now) {
				evs = append(evs, ev{b.Status, id, at,
					buildData{Build: b, PreviousStatus: prev.Status, ObservedBy: ObservedBy}})
			}
			next.Status = b.Status
			next.ObservedBy = ObservedBy
			changed = true
		}
		if b.ImageID != "" && next.ImageID != b.ImageID {
			next.ImageID, changed = b.ImageID, true
		}
		if !b.CreatedAt.IsZero() && !next.CreatedAt.Equal(b.CreatedAt) {
			next.CreatedAt, changed = b.CreatedAt, true
		}
		if !b.UpdatedAt.IsZero() && !next.UpdatedAt.Equal(b.UpdatedAt) {
			next.UpdatedAt, changed = b.UpdatedAt, true
		}
		if next.FirstSeen.IsZero() {
			next.FirstSeen, changed = now, true
		}
		if stuckAfter > 0 && !next.Finished() && !next.StuckEmitted {
			origin := next.CreatedAt
			if origin.IsZero() {
				origin = next.FirstSeen
			}
			if now.Sub(origin) >= stuckAfter {
				sb := b
				sb.Status = next.Status
				evs = append(evs, ev{"stuck", p.o.IDs.BuildStatusID(b.BuildID, "stuck"), now,
					buildData{Build: sb, ObservedBy: ObservedBy, StuckAfter: stuckAfter.String()}})
				next.StuckEmitted, changed = true, true
			}
		}
		if !changed {
			return nil
		}
		if err := tx.PutBuild(b.BuildID, next); err != nil {
			return err
		}
		for _, e := range evs {
			ce, err := event.New(event.KindBuild, b.BuildID, e.action, e.id, e.at, e.data)
			if err != nil {
				return err
			}
			payload, err := json.Marshal(ce)
			if err != nil {
				return err
			}
			if err := tx.Enqueue(ce.NATSSubject(p.prefix), e.id, payload); err != nil {
				return err
			}
		}
		emitted = len(evs)
		return nil
	})
	if err != nil {
		return fmt.Errorf("build %s: commit: %w", b.BuildID, err)
	}
	p.m.events.WithLabelValues(event.KindBuild).Add(float64(emitted))
	return nil
}
