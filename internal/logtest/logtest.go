// Package logtest records what a *slog.Logger logs, for tests that assert
// what an operator sees: which lines, at which level, how many times.
package logtest

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
)

// Record is one logged line.
type Record struct {
	Level slog.Level
	Msg   string
	Attrs map[string]string // key -> value as text; group prefixes dropped
}

// Recorder collects records from every logger derived from its Logger.
type Recorder struct {
	mu      sync.Mutex
	records []Record
}

// New returns a logger at debug level and what it records.
func New() (*slog.Logger, *Recorder) {
	r := &Recorder{}
	return slog.New(&handler{r: r}), r
}

// Records is a copy of everything logged so far.
func (r *Recorder) Records() []Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Record(nil), r.records...)
}

// Find is every record at level whose message contains msg.
func (r *Recorder) Find(level slog.Level, msg string) []Record {
	var out []Record
	for _, rec := range r.Records() {
		if rec.Level == level && strings.Contains(rec.Msg, msg) {
			out = append(out, rec)
		}
	}
	return out
}

// String lists the records, one a line, for failure messages.
func (r *Recorder) String() string {
	var b strings.Builder
	for _, rec := range r.Records() {
		fmt.Fprintf(&b, "%s %q %v\n", rec.Level, rec.Msg, rec.Attrs)
	}
	return b.String()
}

type handler struct {
	r     *Recorder
	attrs []slog.Attr
}

func (h *handler) Enabled(context.Context, slog.Level) bool { return true }

func (h *handler) Handle(_ context.Context, rec slog.Record) error {
	out := Record{Level: rec.Level, Msg: rec.Message, Attrs: map[string]string{}}
	for _, a := range h.attrs {
		out.Attrs[a.Key] = a.Value.String()
	}
	rec.Attrs(func(a slog.Attr) bool {
		out.Attrs[a.Key] = a.Value.String()
		return true
	})
	h.r.mu.Lock()
	h.r.records = append(h.r.records, out)
	h.r.mu.Unlock()
	return nil
}

func (h *handler) WithAttrs(as []slog.Attr) slog.Handler {
	return &handler{r: h.r, attrs: append(append([]slog.Attr(nil), h.attrs...), as...)}
}

func (h *handler) WithGroup(string) slog.Handler { return h }
