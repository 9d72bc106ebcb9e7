package cakeworksim

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/cakework"
)

// logKey names one log stream. Cached VM logs are the VM's stream.
type logKey struct {
	kind cakework.LogKind
	id   string
}

type entry struct {
	ts    int64 // unix ms
	seq   uint64
	level string
	msg   string
}

// after orders entries by (ts, seq); seq is unique per stream, so lines
// sharing one millisecond still have a total order.
func (e entry) after(ts int64, seq uint64) bool {
	return e.ts > ts || (e.ts == ts && e.seq > seq)
}

type stream struct {
	lines []entry
	seq   uint64
}

// appendLog adds a line, keeping the stream sorted. Call with s.mu held.
func (s *Sim) appendLog(k logKey, at time.Time, level, msg string) {
	if k.kind == cakework.LogCachedVM {
		k.kind = cakework.LogVM
	}
	st := s.logs[k]
	if st == nil {
		st = &stream{}
		s.logs[k] = st
	}
	st.seq++
	e := entry{ts: at.UnixMilli(), seq: st.seq, level: level, msg: msg}
	n := len(st.lines)
	if n == 0 || st.lines[n-1].ts <= e.ts {
		st.lines = append(st.lines, e)
		return
	}
	i := sort.Search(n, func(i int) bool { return st.lines[i].ts > e.ts })
	st.lines = append(st.lines, entry{})
	copy(st.lines[i+1:], st.lines[i:])
	st.lines[i] = e
}

// logCursor is a log pagination token. It binds the window (whole seconds),
// the order and the query it was issued for, and the last line served, so
// lines appended while a client pages are neither skipped nor repeated.
type logCursor struct {
	Kind  cakework.LogKind `json:"k"`
	ID    string           `json:"id"`
	From  int64            `json:"f"`
	To    int64            `json:"t"`
	Order string           `json:"o"`
	Query string           `json:"q,omitempty"`
	TS    int64            `json:"ts"`
	Seq   uint64           `json:"n"`
}

func encodeCursor(c logCursor) string {
	raw, _ := json.Marshal(c)
	return base64.RawURLEncoding.EncodeToString(raw)
}

func decodeCursor(tok string) (logCursor, bool) {
	var c logCursor
	raw, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil || json.Unmarshal(raw, &c) != nil {
		return logCursor{}, false
	}
	return c, true
}

type wireLine struct {
	Timestamp int64  `json:"timestamp"`
	Level     string `json:"level"`
	Message   string `json:"message"`
}

type wireLogPage struct {
	Lines      []wireLine `json:"lines"`
	Pagination string     `json:"pagination,omitempty"`
	From       string     `json:"from,omitempty"`
	To         string     `json:"to,omitempty"`
}

// logsHandler serves one log endpoint with Logtail's rules:
//   - from/to are read in any API time form and truncated to whole seconds;
//     the window covers from's whole second through the end of to's second.
//     Absent from means the beginning of time, absent to means now.
//   - batch is clamped to [LogBatchMin, 1000], default 100; a non-number is
//     a 400, as is an unknown order.
//   - a page that leaves lines in the window carries pagination, from and to
//     (in "2006-01-02 15:04:05 UTC" form). The token is only accepted with
//     from and to naming the same seconds, and the same order and query.
func (s *Sim) logsHandler(route string, kind cakework.LogKind) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		q := r.URL.Query()
		batch := cakework.DefaultLogBatch
		if b := q.Get("batch"); b != "" {
			n, err := strconv.Atoi(b)
			if err != nil {
				fail(w, r, http.StatusBadRequest, "batch must be a number between 50 and 1000")
				return
			}
			batch = n
		}
		batch = min(max(batch, s.opts.LogBatchMin), cakework.MaxLogBatch)
		order := q.Get("order")
		if order == "" {
			order = cakework.OrderOldestFirst
		}
		if order != cakework.OrderOldestFirst && order != cakework.OrderNewestFirst {
			fail(w, r, http.StatusBadRequest, "order must be oldest_first or newest_first")
			return
		}
		query := q.Get("query")
		fromSec := int64(0)
		if f := q.Get("from"); f != "" {
			t, err := cakework.ParseTime(f)
			if err != nil {
				fail(w, r, http.StatusBadRequest, "from: expected ISO 8601 such as 2022-07-19T13:32:56+0000")
				return
			}
			fromSec = floorSec(t)
		}
		toSec := floorSec(s.clk.Now())
		if t := q.Get("to"); t != "" {
			tt, err := cakework.ParseTime(t)
			if err != nil {
				fail(w, r, http.StatusBadRequest, "to: expected ISO 8601 such as 2022-07-19T13:32:56+0000")
				return
			}
			toSec = floorSec(tt)
		}
		if fromSec > toSec {
			fail(w, r, http.StatusBadRequest, "from is after to")
			return
		}
		var cur *logCursor
		if tok := q.Get("pagination"); tok != "" {
			c, ok := decodeCursor(tok)
			if !ok || c.Kind != kind || c.ID != id {
				fail(w, r, http.StatusBadRequest, "invalid pagination token")
				return
			}
			if q.Get("from") == "" || q.Get("to") == "" || c.From != fromSec || c.To != toSec {
				fail(w, r, http.StatusBadRequest, "pagination requires the from and to returned with it")
				return
			}
			if c.Order != order || c.Query != query {
				fail(w, r, http.StatusBadRequest, "pagination requires the same order and query")
				return
			}
			cur = &c
		}

		s.mu.Lock()
		if !s.logSourceExists(kind, id) {
			s.mu.Unlock()
			fail(w, r, http.StatusNotFound, strings.ReplaceAll(string(kind), "_", " ")+" not found")
			return
		}
		k := logKey{kind, id}
		if kind == cakework.LogCachedVM {
			k.kind = cakework.LogVM
		}
		var lines []entry
		if st := s.logs[k]; st != nil {
			lines = st.lines
		}
		lo, hi := fromSec*1000, toSec*1000+999
		page, more := selectPage(lines, lo, hi, order, strings.ToLower(query), cur, batch)
		s.mu.Unlock()

		out := wireLogPage{Lines: make([]wireLine, 0, len(page))}
		for _, e := range page {
			out.Lines = append(out.Lines, wireLine{e.ts, e.level, e.msg})
		}
		if more && len(page) > 0 {
			last := page[len(page)-1]
			out.Pagination = encodeCursor(logCursor{Kind: kind, ID: id, From: fromSec, To: toSec,
				Order: order, Query: query, TS: last.ts, Seq: last.seq})
			out.From = cakework.FormatWindowTime(time.Unix(fromSec, 0))
			out.To = cakework.FormatWindowTime(time.Unix(toSec, 0))
		}
		writeJSON(w, http.StatusOK, out)
	}
}

// logSourceExists reports whether the resource behind a log stream exists.
// Call with s.mu held.
func (s *Sim) logSourceExists(kind cakework.LogKind, id string) bool {
	switch kind {
	case cakework.LogBuild:
		_, ok := s.builds[id]
		return ok
	case cakework.LogVM:
		_, ok := s.vms[id]
		return ok
	case cakework.LogCachedVM:
		v, ok := s.vms[id]
		return ok && v.cached
	default:
		_, ok := s.logs[logKey{kind, id}]
		return ok
	}
}

// selectPage picks up to batch lines of the window [lo, hi] (ms) matching
// query, after cur in the given order, and reports whether more remain.
func selectPage(lines []entry, lo, hi int64, order, query string, cur *logCursor, batch int) ([]entry, bool) {
	match := func(e entry) bool {
		return e.ts >= lo && e.ts <= hi && (query == "" || strings.Contains(strings.ToLower(e.msg), query))
	}
	var out []entry
	// take adds lines[i] if it matches and reports whether the batch was
	// already full: there is more.
	take := func(i int) (more bool) {
		if !match(lines[i]) {
			return false
		}
		if len(out) == batch {
			return true
		}
		out = append(out, lines[i])
		return false
	}
	if order == cakework.OrderOldestFirst {
		start := sort.Search(len(lines), func(i int) bool {
			if cur != nil {
				return lines[i].after(cur.TS, cur.Seq)
			}
			return lines[i].ts >= lo
		})
		for i := start; i < len(lines) && lines[i].ts <= hi; i++ {
			if take(i) {
				return out, true
			}
		}
		return out, false
	}
	// newest_first: walk down from the first line past the window or cursor.
	end := sort.Search(len(lines), func(i int) bool {
		if cur != nil {
			return lines[i].ts > cur.TS || (lines[i].ts == cur.TS && lines[i].seq >= cur.Seq)
		}
		return lines[i].ts > hi
	})
	for i := end - 1; i >= 0 && lines[i].ts >= lo; i-- {
		if take(i) {
			return out, true
		}
	}
	return out, false
}

func floorSec(t time.Time) int64 {
	return t.UTC().Truncate(time.Second).Unix()
}
