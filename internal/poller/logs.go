package poller

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"sort"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/cakework"
	"github.com/cakework-relay/cakework-relay/internal/event"
	"github.com/cakework-relay/cakework-relay/internal/state"
)

// cursor is a log stream's durable position (state bucket "cursors",
// "<kind>/<id>"). It is written in the same transaction as the log event of
// the page it accounts for.
type cursor struct {
	// Pending is the resume point inside a window being paged (pagination,
	// from and to as the server gave them). Nil between windows.
	Pending *cakework.LogQuery `json:"pending,omitempty"`
	// Skip is, while Pending is set, what is left to skip at LastTs in this
	// window: lines emitted by an earlier window that this window meets
	// again because windows are whole seconds.
	Skip map[string]int `json:"skip,omitempty"`
	// LastTs is the newest emitted line's timestamp (unix ms), 0 for none.
	LastTs int64 `json:"lastTs,omitempty"`
	// Seen counts the lines emitted at LastTs by content (hash of level and
	// message): a multiset, so identical lines in one millisecond are all
	// kept.
	Seen map[string]int `json:"seen,omitempty"`
	// Floor drops lines before it (unix ms): the baseline for VMs already
	// running then, or the end of a cached VM's previous run.
	Floor int64 `json:"floor,omitempty"`
	// From is where the first window starts when nothing was emitted yet
	// (zero: no from is sent, the whole log).
	From time.Time `json:"from,omitzero"`
	// LastNewAt is when lines were last emitted (relay clock).
	LastNewAt time.Time `json:"lastNewAt,omitzero"`
}

func (c cursor) clone() cursor {
	c.Seen = maps.Clone(c.Seen)
	c.Skip = maps.Clone(c.Skip)
	if c.Pending != nil {
		q := *c.Pending
		c.Pending = &q
	}
	return c
}

// emitted is a line to publish and how many lines at its millisecond were
// emitted before it (the second half of its batch's id).
type emitted struct {
	line   cakework.LogLine
	before int
}

func lineHash(l cakework.LogLine) string {
	h := sha256.New()
	h.Write([]byte(l.Level))
	h.Write([]byte{0})
	h.Write([]byte(l.Message))
	return hex.EncodeToString(h.Sum(nil)[:12])
}

// accept filters a page (oldest first) against the cursor, advancing it,
// and returns the new lines. skip is the window's remaining skip set; it
// is consumed in place.
func (c *cursor) accept(lines []cakework.LogLine, skip map[string]int) []emitted {
	var out []emitted
	seenN := 0
	for _, n := range c.Seen {
		seenN += n
	}
	for _, l := range lines {
		if l.Timestamp < c.Floor || l.Timestamp < c.LastTs {
			continue
		}
		h := lineHash(l)
		if l.Timestamp == c.LastTs {
			if skip[h] > 0 {
				skip[h]--
				continue
			}
		} else {
			c.LastTs = l.Timestamp
			c.Seen = map[string]int{}
			seenN = 0
			clear(skip)
		}
		if c.Seen == nil {
			c.Seen = map[string]int{}
		}
		out = append(out, emitted{l, seenN})
		c.Seen[h]++
		seenN++
	}
	return out
}

// stream is one log stream the logs tick reads.
type stream struct {
	logKind cakework.LogKind
	kind    string // state/event kind: build, vm, function_build
	id      string
	fresh   cursor // the cursor to start from when none is stored
	// ended: the resource is finished (build) or stopped/destroyed (VM);
	// once a pass drains with nothing new, tailing stops.
	ended   bool
	addedAt time.Time // function builds: when the watch was added
}

func (s stream) key() string { return "logs/" + s.kind + "/" + s.id }

// passResult says how a pass over one stream went.
type passResult struct {
	lines    int
	drained  bool // the window ended (no pagination left)
	cur      cursor
	notFound bool
}

// maxLinesBytes splits a page's lines over several events so one event
// stays well under NATS's default 1 MB payload limit.
const maxLinesBytes = 256 << 10

// maxMessage caps one line's message in events; longer ones are cut and
// marked. The cursor still tells lines apart by their full text.
const maxMessage = 32 << 10

// tailLogs reads every tailed stream once: watched builds and function
// builds a page of watches at a time, then VMs.
func (p *Poller) tailLogs(ctx context.Context) error {
	if err := p.applyQueuedWatches(ctx); err != nil {
		return err
	}
	var errs []error
	kinds := []string{state.KindFunctionBuild}
	if p.cfg.Logs.Builds {
		kinds = []string{state.KindBuild, state.KindFunctionBuild}
	}
	for _, kind := range kinds {
		for after := ""; ctx.Err() == nil; {
			streams, last, err := p.watchStreams(kind, after)
			if err != nil {
				return errors.Join(append(errs, fmt.Errorf("logs: %w", err))...)
			}
			if err := parallel(ctx, p.workers, streams, p.tailOne); err != nil {
				errs = append(errs, err)
			}
			if last == "" {
				break
			}
			after = last
		}
	}
	streams, err := p.vmStreams()
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("logs: %w", err))...)
	}
	if err := parallel(ctx, p.workers, streams, p.tailOne); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// watchStreams lists one page of the watched builds' (or function builds')
// streams, after the id after. last is the page's last id, "" when there
// is no next page.
func (p *Poller) watchStreams(kind, after string) (out []stream, last string, err error) {
	err = p.store.View(func(tx Tx) error {
		ws, err := tx.WatchesPage(kind, after, watchPage)
		if err != nil {
			return err
		}
		if len(ws) == watchPage {
			last = ws[len(ws)-1].ID
		}
		for _, w := range ws {
			if kind == state.KindFunctionBuild {
				out = append(out, stream{logKind: cakework.LogFunctionBuild, kind: kind, id: w.ID, addedAt: w.AddedAt})
				continue
			}
			st, _, _ := tx.GetBuild(w.ID)
			s := stream{logKind: cakework.LogBuild, kind: kind, id: w.ID, ended: st.Finished()}
			if !st.CreatedAt.IsZero() {
				s.fresh.From = st.CreatedAt.Add(-time.Minute)
			}
			out = append(out, s)
		}
		return nil
	})
	return out, last, err
}

// vmStreams lists the VMs that are started or still have a cursor
// (logs.vms).
func (p *Poller) vmStreams() ([]stream, error) {
	var out []stream
	if !p.cfg.Logs.VMs {
		return nil, nil
	}
	err := p.store.View(func(tx Tx) error {
		var base baselineMeta
		haveBase, err := tx.GetMeta(metaBaseline, &base)
		if err != nil {
			return err
		}
		// A VM is tailed while it has a cursor. The sweep creates it in the
		// transaction that records the VM running; started VMs without
		// one (logs.vms just turned on) get one here.
		tailing := map[string]bool{}
		if err := tx.ForEachCursor(state.KindVM, func(id string, _ []byte) error {
			tailing[id] = true
			return nil
		}); err != nil {
			return err
		}
		if err := tx.ForEachResource(state.KindVM, func(id string, raw []byte) error {
			var r vmRecord
			if json.Unmarshal(raw, &r) != nil {
				return nil
			}
			started := r.VM.State == cakework.VMStarted && r.GoneAt.IsZero()
			if !started && !tailing[id] {
				return nil
			}
			delete(tailing, id)
			out = append(out, stream{logKind: cakework.LogVM, kind: state.KindVM, id: id,
				ended: vmEnded(r), fresh: vmFreshCursor(r, base, haveBase)})
			return nil
		}); err != nil {
			return err
		}
		// Cursors whose VM record is gone: drain and drop.
		for id := range tailing {
			out = append(out, stream{logKind: cakework.LogVM, kind: state.KindVM, id: id, ended: true})
		}
		return nil
	})
	sort.Slice(out, func(i, j int) bool { return out[i].id < out[j].id })
	return out, err
}

// tailOne runs one pass over s and retires the stream when it is done.
func (p *Poller) tailOne(ctx context.Context, s stream) error {
	if !p.due(s.key()) || p.paused() {
		return nil
	}
	now := p.clk.Now().UTC()
	res, err := p.pass(ctx, s)
	// A 404 is the end of a stream whose resource is finished or gone, and
	// "no lines yet" for a function build (its log exists from the first
	// line on). Anywhere else it is trouble like any other.
	gone := err != nil && res.notFound && (s.ended || s.kind == state.KindFunctionBuild)
	if err != nil && !gone {
		p.failed(s.key(), err)
		if s.kind == state.KindVM {
			p.know.logPass(s.id, false, false, now, time.Time{}, true)
		}
		if res.notFound {
			// A stream Cakework does not know (a stray build id, a VM
			// gone between sweeps) backs off and is counted, but is not a
			// failure of the schedule: one stray webhook must not keep
			// the logs schedule failing. The builds schedule drops a
			// build unknown for poller.builds.drop_unknown_after.
			p.m.streamsGone.WithLabelValues(s.kind).Inc()
			return nil
		}
		return fmt.Errorf("logs %s %s: %w", s.kind, s.id, err)
	}
	p.succeeded(s.key())
	if s.kind == state.KindVM {
		newest := time.Time{}
		if res.cur.LastTs > 0 {
			newest = time.UnixMilli(res.cur.LastTs).UTC()
		}
		p.know.logPass(s.id, true, res.drained, now, newest, true)
	}
	quiet := gone || (res.drained && res.lines == 0)
	if !quiet {
		return nil
	}
	switch s.kind {
	case state.KindBuild:
		if s.ended {
			return p.retireWatch(ctx, s, "build finished and its log is drained")
		}
	case state.KindFunctionBuild:
		last := s.addedAt
		if res.cur.LastNewAt.After(last) {
			last = res.cur.LastNewAt
		}
		if now.Sub(last) >= p.o.FunctionBuildIdle {
			return p.retireWatch(ctx, s, fmt.Sprintf("no new lines for %s", p.o.FunctionBuildIdle))
		}
	case state.KindVM:
		if s.ended {
			return p.retireVM(ctx, s.id, res.cur.LastTs)
		}
	}
	return nil
}

// retireWatch drops a build or function build watch. The cursor stays, so
// watching it again resumes after the last emitted line instead of
// repeating the log.
func (p *Poller) retireWatch(ctx context.Context, s stream, why string) error {
	err := p.store.Update(ctx, func(tx Tx) error {
		if s.kind == state.KindBuild {
			// Only a finished build is dropped (a webhook cannot unfinish
			// it, but check under the transaction anyway).
			if st, ok, _ := tx.GetBuild(s.id); !ok || !st.Finished() {
				return nil
			}
		}
		_, err := tx.DeleteWatch(s.kind, s.id)
		return err
	})
	if err != nil {
		return fmt.Errorf("logs %s %s: drop watch: %w", s.kind, s.id, err)
	}
	p.log.Debug("stopped watching", "kind", s.kind, "id", s.id, "why", why)
	return nil
}

// retireVM stops tailing a stopped or destroyed VM whose final lines are
// drained: the cursor is deleted and its last timestamp kept on the VM
// record, so a cached VM that starts again resumes after it.
func (p *Poller) retireVM(ctx context.Context, id string, lastTs int64) error {
	var retired bool
	err := p.store.Update(ctx, func(tx Tx) error {
		retired = false
		var r vmRecord
		had, err := tx.GetResource(state.KindVM, id, &r)
		if err != nil {
			had = false
		}
		if had && r.GoneAt.IsZero() && r.VM.State == cakework.VMStarted {
			return nil // started again meanwhile: keep tailing
		}
		if had && lastTs > r.LogsDoneTs {
			r.LogsDoneTs = lastTs
			if err := tx.PutResource(state.KindVM, id, r); err != nil {
				return err
			}
		}
		retired = true
		return tx.DeleteCursor(state.KindVM, id)
	})
	if err != nil {
		return fmt.Errorf("logs vm %s: retire: %w", id, err)
	}
	if retired {
		p.know.mu.Lock()
		if v := p.know.vms[id]; v != nil {
			v.tailing = false
		}
		p.know.mu.Unlock()
	}
	return nil
}

// pass reads s from its cursor, up to the page budget, committing each
// page's new lines with the cursor that accounts for them.
func (p *Poller) pass(ctx context.Context, s stream) (passResult, error) {
	var cur cursor
	var have bool
	if err := p.store.View(func(tx Tx) error {
		var err error
		have, err = tx.GetCursor(s.kind, s.id, &cur)
		return err
	}); err != nil {
		return passResult{}, err
	}
	if !have {
		cur = s.fresh
	}
	var (
		q    cakework.LogQuery
		skip map[string]int
	)
	if cur.Pending != nil {
		q, skip = *cur.Pending, maps.Clone(cur.Skip)
	} else {
		q, skip = p.window(cur), maps.Clone(cur.Seen)
	}
	if skip == nil {
		skip = map[string]int{}
	}
	res := passResult{cur: cur}
	next, _, err := p.client.PageLogs(ctx, s.logKind, s.id, q, p.cfg.Logs.MaxPages,
		func(page cakework.LogPage, next cakework.LogQuery) error {
			c := res.cur.clone()
			sk := maps.Clone(skip)
			lines := c.accept(page.Lines, sk)
			pending := next.Pending()
			wasPending := c.Pending != nil
			if pending {
				n := next
				c.Pending, c.Skip = &n, sk
			} else {
				c.Pending, c.Skip = nil, nil
			}
			if len(lines) == 0 && !pending && !wasPending {
				skip, res.cur = sk, c
				return nil // nothing new and no position to keep
			}
			now := p.clk.Now().UTC()
			if len(lines) > 0 {
				c.LastNewAt = now
			}
			evs, err := p.logEvents(s, lines)
			if err != nil {
				return err
			}
			if p.beforeLogCommit != nil {
				if err := p.beforeLogCommit(s.kind, s.id); err != nil {
					return err
				}
			}
			if err := p.store.Update(ctx, func(tx Tx) error {
				if err := tx.PutCursor(s.kind, s.id, c); err != nil {
					return err
				}
				for _, e := range evs {
					if err := tx.Enqueue(e.subject, e.id, e.payload); err != nil {
						return err
					}
				}
				return nil
			}); err != nil {
				return fmt.Errorf("commit: %w", err)
			}
			skip, res.cur = sk, c
			res.lines += len(lines)
			if len(lines) > 0 {
				p.m.events.WithLabelValues(s.kind + ".log").Add(float64(len(evs)))
				p.m.logLines.WithLabelValues(s.kind).Add(float64(len(lines)))
			}
			return nil
		})
	if err != nil {
		if cakework.IsNotFound(err) {
			res.notFound = true
		}
		var ae *cakework.APIError
		if res.cur.Pending != nil && (errors.As(err, &ae) && ae.Status == http.StatusBadRequest || errors.Is(err, cakework.ErrPagingStuck)) {
			// The server refuses (or loops on) the stored token: start a
			// fresh window at the newest emitted line's second next time.
			// That repeats nothing (the multiset drops what was emitted)
			// and skips nothing.
			c := res.cur.clone()
			c.Pending, c.Skip = nil, nil
			if uerr := p.store.Update(ctx, func(tx Tx) error { return tx.PutCursor(s.kind, s.id, c) }); uerr == nil {
				p.log.Warn("log pagination token refused; restarting the window from the cursor", "kind", s.kind, "id", s.id, "err", err)
			}
		}
		return res, err
	}
	res.drained = !next.Pending()
	return res, nil
}

// window starts a new window at the second of the newest emitted line (so
// lines that arrived later in that second are seen; the cursor drops the
// ones already emitted), and ends it now.
func (p *Poller) window(c cursor) cakework.LogQuery {
	var from time.Time
	switch {
	case c.LastTs > 0:
		from = time.UnixMilli(c.LastTs)
	case c.Floor > 0:
		from = time.UnixMilli(c.Floor)
	default:
		from = c.From
	}
	to := p.clk.Now()
	if !from.IsZero() && from.After(to) {
		to = from
	}
	q := cakework.LogQuery{To: to.UTC(), Batch: p.cfg.Logs.Batch}
	if !from.IsZero() {
		q.From = from.UTC()
	}
	return q
}

type preparedEvent struct {
	subject, id string
	payload     []byte
}

// logLine is one line in a log event's data.
type logLine struct {
	Time      string `json:"time"`
	Timestamp int64  `json:"timestamp"`
	Level     string `json:"level"`
	Message   string `json:"message"`
}

// logEvents turns a page's new lines into one event, or several when the
// lines are too large for one message. Each event's id is where it starts
// in the stream: its first line's timestamp and how many lines at that
// millisecond came before it.
func (p *Poller) logEvents(s stream, lines []emitted) ([]preparedEvent, error) {
	var out []preparedEvent
	dataKey := map[string]string{state.KindBuild: "buildId", state.KindVM: "vmId", state.KindFunctionBuild: "functionBuildId"}[s.kind]
	for start := 0; start < len(lines); {
		var (
			batch []logLine
			size  int
			end   = start
		)
		for end < len(lines) && (end == start || size < maxLinesBytes) {
			l := lines[end].line
			msg := l.Message
			if len(msg) > maxMessage {
				msg = msg[:maxMessage] + " …[truncated]"
			}
			batch = append(batch, logLine{
				Time:      l.Time().Format("2006-01-02T15:04:05.000Z07:00"),
				Timestamp: l.Timestamp, Level: l.Level, Message: msg,
			})
			size += len(msg) + len(l.Level) + 80
			end++
		}
		first := lines[start]
		id := p.o.IDs.LogBatchID(s.kind, s.id, first.line.Timestamp, first.before)
		ev, err := event.New(s.kind, s.id, "log", id, lines[end-1].line.Time(),
			map[string]any{dataKey: s.id, "lines": batch})
		if err != nil {
			return nil, err
		}
		payload, err := json.Marshal(ev)
		if err != nil {
			return nil, err
		}
		out = append(out, preparedEvent{ev.NATSSubject(p.prefix), id, payload})
		start = end
	}
	return out, nil
}

// vmEnded: the VM is not running (stopped, destroyed, gone, or any other
// state than started). Its stream is drained and retired; if it starts
// again, tailing resumes after the last line emitted.
func vmEnded(r vmRecord) bool {
	return !r.GoneAt.IsZero() || r.VM.State != cakework.VMStarted
}

// vmFreshCursor is where a VM's log tailing starts: from the baseline for a
// VM that was already running then (no first-run flood), after the previous
// run for a cached VM started again, else from the first line (the window
// opens a minute before the VM was created).
func vmFreshCursor(r vmRecord, base baselineMeta, haveBase bool) cursor {
	var c cursor
	switch {
	case r.RunningAtBaseline && haveBase:
		c.Floor = base.At.UnixMilli()
		c.From = base.At
	case r.LogsDoneTs > 0:
		c.Floor = r.LogsDoneTs + 1
		c.From = time.UnixMilli(r.LogsDoneTs + 1).UTC()
	case !r.VM.CreatedAt.IsZero():
		c.From = r.VM.CreatedAt.Add(-time.Minute)
	}
	return c
}
