package cakework

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// LogKind names one of the four log endpoints.
type LogKind string

const (
	LogBuild         LogKind = "build"          // /v1/image/build/{id}/logs
	LogVM            LogKind = "vm"             // /v1/vm/{id}/logs
	LogCachedVM      LogKind = "cached_vm"      // /v1/vm/cached/{id}/logs
	LogFunctionBuild LogKind = "function_build" // /v1/function/build/{id}/logs
)

// Log orders the API accepts.
const (
	OrderOldestFirst = "oldest_first"
	OrderNewestFirst = "newest_first"
)

// Batch limits the API accepts.
const (
	MinLogBatch     = 50
	MaxLogBatch     = 1000
	DefaultLogBatch = 100
)

func (k LogKind) route(id string) (op, path string, err error) {
	switch k {
	case LogBuild:
		return opGetBuildLogs, "/v1/image/build/" + esc(id) + "/logs", nil
	case LogVM:
		return opGetVMLogs, "/v1/vm/" + esc(id) + "/logs", nil
	case LogCachedVM:
		return opGetCachedVMLogs, "/v1/vm/cached/" + esc(id) + "/logs", nil
	case LogFunctionBuild:
		return opGetFunctionBuildLogs, "/v1/function/build/" + esc(id) + "/logs", nil
	}
	return "", "", fmt.Errorf("cakework: unknown log kind %q", string(k))
}

// LogQuery is one log request, and also the resume point of a paged read. It
// is a plain value that round-trips through encoding/json, so a poller can
// store it and carry on after a restart.
//
// The window is From/To (zero: not sent), formatted with FormatQueryTime, or
// RawFrom/RawTo when set: those are the server's own from/to strings from the
// previous page and are sent back verbatim. Verbatim, not re-formatted,
// because a pagination token is only valid with the exact window it was
// issued for, and the server's strings are the one spelling of that window
// that cannot drift.
type LogQuery struct {
	From       time.Time `json:"from,omitzero"`
	To         time.Time `json:"to,omitzero"`
	Batch      int       `json:"batch,omitempty"` // 0: server default (100); the API takes 50–1000
	Order      string    `json:"order,omitempty"` // "" (oldest_first), OrderOldestFirst or OrderNewestFirst
	Query      string    `json:"query,omitempty"` // case-insensitive substring filter
	Pagination string    `json:"pagination,omitempty"`
	RawFrom    string    `json:"rawFrom,omitempty"`
	RawTo      string    `json:"rawTo,omitempty"`
}

// Pending reports whether q carries a pagination token, i.e. the window it
// names has more lines to read.
func (q LogQuery) Pending() bool { return q.Pagination != "" }

func (q LogQuery) values() url.Values {
	v := url.Values{}
	if q.Query != "" {
		v.Set("query", q.Query)
	}
	if q.Batch > 0 {
		v.Set("batch", strconv.Itoa(q.Batch))
	}
	if q.Order != "" {
		v.Set("order", q.Order)
	}
	if q.Pagination != "" {
		v.Set("pagination", q.Pagination)
	}
	if s := q.fromParam(); s != "" {
		v.Set("from", s)
	}
	if s := q.toParam(); s != "" {
		v.Set("to", s)
	}
	return v
}

func (q LogQuery) fromParam() string { return timeParam(q.RawFrom, q.From) }

func (q LogQuery) toParam() string { return timeParam(q.RawTo, q.To) }

// timeParam is the from or to parameter: raw as the server returned it, or
// else t formatted, or empty for neither.
func timeParam(raw string, t time.Time) string {
	if raw != "" {
		return raw
	}
	if !t.IsZero() {
		return FormatQueryTime(t)
	}
	return ""
}

// Next is the query for the page after p, which answered prev. When p has no
// pagination the window is drained: more is false and next is prev without
// its token and raw window, for the caller to start a new window from its own
// cursor. Otherwise next carries all three of pagination, from and to (from/to
// verbatim from p, or prev's when p omitted them) and every other parameter
// unchanged.
func (p LogPage) Next(prev LogQuery) (next LogQuery, more bool) {
	next = prev
	if p.Pagination == "" {
		next.Pagination, next.RawFrom, next.RawTo = "", "", ""
		return next, false
	}
	next.Pagination = p.Pagination
	if p.From != "" {
		next.RawFrom = p.From
	} else {
		next.RawFrom = prev.fromParam()
	}
	if p.To != "" {
		next.RawTo = p.To
	} else {
		next.RawTo = prev.toParam()
	}
	return next, true
}

// Logs reads one page of the logs of kind for id.
func (c *Client) Logs(ctx context.Context, kind LogKind, id string, q LogQuery) (LogPage, error) {
	op, path, err := kind.route(id)
	if err != nil {
		return LogPage{}, err
	}
	if id == "" {
		return LogPage{}, errEmptyID(op)
	}
	cl := call{op: op, method: http.MethodGet, path: path, query: q.values()}
	return doJSON(ctx, c, cl, DecodeLogPage)
}

// BuildLogs reads one page of a build's logs.
func (c *Client) BuildLogs(ctx context.Context, buildID string, q LogQuery) (LogPage, error) {
	return c.Logs(ctx, LogBuild, buildID, q)
}

// VMLogs reads one page of a VM's logs (app and platform lines).
func (c *Client) VMLogs(ctx context.Context, vmID string, q LogQuery) (LogPage, error) {
	return c.Logs(ctx, LogVM, vmID, q)
}

// CachedVMLogs reads one page of a cached VM's logs.
func (c *Client) CachedVMLogs(ctx context.Context, id string, q LogQuery) (LogPage, error) {
	return c.Logs(ctx, LogCachedVM, id, q)
}

// FunctionBuildLogs reads one page of a function build's logs.
func (c *Client) FunctionBuildLogs(ctx context.Context, buildID string, q LogQuery) (LogPage, error) {
	return c.Logs(ctx, LogFunctionBuild, buildID, q)
}

// PageLogs reads pages starting with q, following pagination, for at most
// maxPages pages. For each page it calls fn with the page and the resume
// point after it (what to store alongside the page's lines so that a restart
// neither repeats nor skips them).
//
// It returns the resume point and the number of pages read:
//   - window drained: next.Pending() is false; start the next window from
//     your own cursor;
//   - budget spent: next.Pending() is true; call PageLogs with next later;
//   - error (from the API or from fn): next is the query of the page that was
//     not consumed, so retrying it repeats nothing.
//
// fn may be nil. PageLogs never retries on its own.
func (c *Client) PageLogs(ctx context.Context, kind LogKind, id string, q LogQuery, maxPages int,
	fn func(page LogPage, next LogQuery) error) (next LogQuery, pages int, err error) {
	if maxPages <= 0 {
		return q, 0, errors.New("cakework: PageLogs needs a page budget of at least 1")
	}
	for pages < maxPages {
		page, err := c.Logs(ctx, kind, id, q)
		if err != nil {
			return q, pages, err
		}
		pages++
		n, more := page.Next(q)
		if more && len(page.Lines) == 0 && n.Pagination == q.Pagination {
			return q, pages, fmt.Errorf("cakework %s logs %s: %w", kind, id, ErrPagingStuck)
		}
		if fn != nil {
			if err := fn(page, n); err != nil {
				return q, pages, err
			}
		}
		q = n
		if !more {
			return q, pages, nil
		}
	}
	return q, pages, nil
}
