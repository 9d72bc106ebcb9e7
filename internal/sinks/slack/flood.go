package slack

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/event"
	"github.com/cakework-relay/cakework-relay/internal/sinks"
)

var jsonUnmarshal = json.Unmarshal

// floodWindow remembers, per event type, when the last events arrived. It
// is memory only: after a restart at most Threshold more events of a type
// are posted one by one before folding starts again.
type floodWindow struct {
	mu     sync.Mutex
	recent map[string][]time.Time
}

// hit counts an event of typ at now and reports whether it is one too
// many: at least threshold others arrived within window before it. Only
// the last threshold times are kept, so memory is bounded.
func (w *floodWindow) hit(typ string, now time.Time, threshold int, window time.Duration) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	ts := w.recent[typ]
	n := 0
	for _, t := range ts {
		if now.Sub(t) < window {
			ts[n] = t
			n++
		}
	}
	ts = ts[:n]
	flood := len(ts) >= threshold
	ts = append(ts, now)
	if len(ts) > threshold {
		ts = ts[len(ts)-threshold:]
	}
	w.recent[typ] = ts
	return flood
}

// fold records e in its type's pending summary, durably, before the event
// is acked. A build or VM still gets its facts (and, if it has a parent,
// a stale mark so the flusher updates the card).
func (s *Sender) fold(ctx context.Context, e event.Event, d data) sinks.Result {
	kind, id, typ := e.Kind(), e.Subject, e.ShortType()
	if threaded(kind) {
		mu := s.lock(kind, id)
		mu.Lock()
		defer mu.Unlock()
	}
	now := s.clock.Now()
	first := false
	err := s.store.Update(ctx, func(tx sinks.RecordTx) error {
		first = false
		var p pending
		if _, err := tx.GetSink(s.cfg.Name, floodKey(typ), &p); err != nil {
			return err
		}
		if p.has(e.ID) {
			return nil // a redelivery of an event already folded
		}
		if p.Count == 0 {
			p = pending{Type: typ, Since: now, Due: now.Add(s.cfg.Flood.Window)}
			first = true
		}
		p.Count++
		if len(p.Items) < maxSummaryItems {
			p.Items = append(p.Items, pendingItem{EventID: e.ID, Subject: id, Action: e.Action(), Time: e.Time, Detail: detail(d)})
		}
		if err := tx.PutSink(s.cfg.Name, floodKey(typ), p); err != nil {
			return err
		}
		if !threaded(kind) {
			return nil
		}
		var rec parentRec
		if _, err := tx.GetSink(s.cfg.Name, parentKey(kind, id), &rec); err != nil {
			return err
		}
		var ring logRing
		if kind == event.KindBuild {
			if _, err := tx.GetSink(s.cfg.Name, ringKey(id), &ring); err != nil {
				return err
			}
		}
		prepare(&rec, ring, e, d)
		rec.UpdatedAt = now
		if rec.TS != "" && !s.webhook {
			rec.Stale = true
			rec.markReplied(e.ID)
			if err := tx.PutSink(s.cfg.Name, staleKey(kind, id), true); err != nil {
				return err
			}
		}
		if kind == event.KindBuild && buildFinished(rec.Facts.Status) {
			if err := tx.DeleteSink(s.cfg.Name, ringKey(id)); err != nil {
				return err
			}
		}
		return tx.PutSink(s.cfg.Name, parentKey(kind, id), rec)
	})
	if err != nil {
		return sinks.RetryLater(fmt.Errorf("slack sink %s: recording %s for the flood summary: %w", s.cfg.Name, typ, err), 0)
	}
	if first {
		s.log.Info("slack: flood of one event type; folding it into a summary", "type", typ, "threshold", s.cfg.Flood.Threshold, "window", s.cfg.Flood.Window)
		s.kick()
	}
	return sinks.Delivered()
}

func detail(d data) string {
	var parts []string
	for _, k := range []string{"hostname", "imageId"} {
		if v := d.str(k); v != "" {
			parts = append(parts, v)
		}
	}
	return strings.Join(parts, " · ")
}

// kick wakes the flusher to look at the store again.
func (s *Sender) kick() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// flushLoop posts due summaries and refreshes stale cards. It sleeps on the
// clock until the next summary or retry is due, or until kicked.
func (s *Sender) flushLoop() {
	defer s.wg.Done()
	// Failed refreshes of a stale card, per card: the attempt number the
	// framework's schedule needs and when it is due again. Memory only
	// (the stale mark itself is durable); only this goroutine touches it.
	staleFails := map[string]staleRetry{}
	for {
		next := s.flushPass(s.ctx, staleFails)
		var timer <-chan time.Time
		if !next.IsZero() {
			timer = s.clock.After(next.Sub(s.clock.Now()))
		}
		select {
		case <-s.ctx.Done():
			return
		case <-s.wake:
		case <-timer:
		}
	}
}

// inactiveRecheck is how often the flusher of a fleet member that does
// not deliver the sink checks whether it does now.
const inactiveRecheck = 2 * time.Second

// SetActive implements sinks.Activated.
func (s *Sender) SetActive(active func() bool) { s.active.Store(&active) }

// staleRetry is a stale card whose refresh failed.
type staleRetry struct {
	n   int       // failed refreshes in a row
	due time.Time // not tried again before
}

// minStaleRetry is the least wait before a failed card refresh is tried
// again. A card is only an update of a message already in the channel (its
// events were posted as thread replies), so it is not worth the sink's
// short first retries; 30s was the flusher's wait before it used the
// framework's schedule.
const minStaleRetry = 30 * time.Second

// flushPass does what is due now and returns when to look again (zero:
// when kicked). Every failed post is tried again after the framework's
// schedule says (s.retry, with Slack's Retry-After); nothing pending is
// ever dropped.
func (s *Sender) flushPass(ctx context.Context, staleFails map[string]staleRetry) time.Time {
	now := s.clock.Now()
	if active := s.active.Load(); active != nil && !(*active)() {
		// Another fleet member delivers this sink; look again later, in
		// case this one takes over.
		return now.Add(inactiveRecheck)
	}
	var next time.Time
	later := func(t time.Time) {
		if next.IsZero() || t.Before(next) {
			next = t
		}
	}
	var ps []pending
	var stale []string
	err := s.store.View(func(tx sinks.RecordTx) error {
		if err := forEachSub(tx, s.cfg.Name, "flood", func(_ string, raw []byte) error {
			var p pending
			if err := json.Unmarshal(raw, &p); err == nil && p.Count > 0 {
				ps = append(ps, p)
			}
			return nil
		}); err != nil {
			return err
		}
		return forEachSub(tx, s.cfg.Name, "stale", func(k string, _ []byte) error {
			stale = append(stale, k)
			return nil
		})
	})
	if err != nil {
		s.log.Warn("slack: reading pending summaries", "err", err)
		// The local store failed, not a post: no delivery to schedule,
		// just look again soon.
		later(now.Add(30 * time.Second))
		return next
	}
	for _, p := range ps {
		if p.at().After(now) {
			later(p.at())
			continue
		}
		if ctx.Err() != nil {
			return next
		}
		if at, ok := s.flushSummary(ctx, p); !ok {
			later(at)
		}
	}
	for k := range staleFails {
		if !slices.Contains(stale, k) {
			delete(staleFails, k) // refreshed by a Send meanwhile
		}
	}
	for _, k := range stale {
		if ctx.Err() != nil {
			return next
		}
		if r, ok := staleFails[k]; ok && r.due.After(now) {
			// Not due: a kick from a new event must not make every card
			// that failed try again during a Slack outage.
			later(r.due)
			continue
		}
		kind, id, _ := strings.Cut(k, "/")
		res := s.refreshParent(ctx, kind, id)
		switch res.Outcome {
		case sinks.Retry:
			if ctx.Err() == nil {
				r := staleFails[k]
				r.n++
				wait := max(s.retry.Wait(r.n, res.After), minStaleRetry)
				r.due = s.clock.Now().Add(wait)
				staleFails[k] = r
				s.log.Warn("slack: updating a parent message failed; will retry", "resource", k, "attempt", r.n, "retry_in", wait, "err", res.Err)
				later(r.due)
			}
		case sinks.GiveUp:
			delete(staleFails, k)
			s.log.Error("slack: cannot update a parent message", "resource", k, "err", res.Err)
		default:
			delete(staleFails, k)
		}
	}
	return next
}

// flushSummary posts one summary. On success the events it covered leave
// the record (events folded meanwhile stay for the next one); on failure
// the record says when to try again, which it returns.
func (s *Sender) flushSummary(ctx context.Context, p pending) (time.Time, bool) {
	res, ok := s.postMsg(ctx, summaryMessage(p, s.cfg.Flood.Threshold, s.cfg.Flood.Window))
	now := s.clock.Now()
	uctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var nextTry time.Time
	err := s.store.Update(uctx, func(tx sinks.RecordTx) error {
		var cur pending
		if _, err := tx.GetSink(s.cfg.Name, floodKey(p.Type), &cur); err != nil {
			return err
		}
		if !ok {
			cur.Attempts++
			cur.NextTry = now.Add(s.retry.Wait(cur.Attempts, res.After))
			cur.LastError = truncate(res.Err.Error(), 500)
			nextTry = cur.NextTry
			return tx.PutSink(s.cfg.Name, floodKey(p.Type), cur)
		}
		cur.Count -= p.Count
		cur.Items = cur.Items[min(len(p.Items), len(cur.Items)):]
		if cur.Count <= 0 {
			return tx.DeleteSink(s.cfg.Name, floodKey(p.Type))
		}
		cur.Since, cur.Due, cur.NextTry, cur.Attempts, cur.LastError = now, now.Add(s.cfg.Flood.Window), time.Time{}, 0, ""
		return tx.PutSink(s.cfg.Name, floodKey(p.Type), cur)
	})
	if err != nil {
		s.log.Warn("slack: saving the summary state failed", "type", p.Type, "err", err)
		if ok {
			// Posted but not recorded: it may be posted again (at least once).
			return now.Add(30 * time.Second), false
		}
	}
	if !ok {
		if nextTry.IsZero() {
			nextTry = now.Add(30 * time.Second)
		}
		lvl := s.log.Warn
		if res.Outcome == sinks.GiveUp {
			lvl = s.log.Error
		}
		lvl("slack: posting a flood summary failed; it stays pending", "type", p.Type, "events", p.Count, "retry_at", nextTry, "err", res.Err)
		return nextTry, false
	}
	s.log.Info("slack: flood summary posted", "type", p.Type, "events", p.Count)
	return time.Time{}, true
}

// refreshParent rewrites a stale card from its record.
func (s *Sender) refreshParent(ctx context.Context, kind, id string) sinks.Result {
	mu := s.lock(kind, id)
	mu.Lock()
	defer mu.Unlock()
	rec, _, err := s.load(kind, id)
	if err != nil {
		return sinks.RetryLater(err, 0)
	}
	if rec.TS == "" || !rec.Stale || s.webhook {
		rec.Stale = false
		if rec.Facts.Kind == "" {
			// No record at all: just drop the mark.
			uctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = s.store.Update(uctx, func(tx sinks.RecordTx) error { return tx.DeleteSink(s.cfg.Name, staleKey(kind, id)) })
			return sinks.Delivered()
		}
		s.save(rec)
		return sinks.Delivered()
	}
	res, ok := s.updateCard(ctx, &rec)
	if !ok {
		if res.Outcome == sinks.GiveUp {
			rec.Stale = false
			s.save(rec)
		}
		return res
	}
	rec.Stale = false
	s.save(rec)
	return sinks.Delivered()
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
