// Package console prints events as one aligned line each, for `relay demo`
// and `relay tail`: time, short type, resource, and the key fact.
package console

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/event"
)

const (
	reset  = "\x1b[0m"
	red    = "\x1b[31m"
	green  = "\x1b[32m"
	yellow = "\x1b[33m"
	blue   = "\x1b[34m"
	dim    = "\x1b[2m"
)

// Printer writes one line per event. It is safe for concurrent use.
type Printer struct {
	mu    sync.Mutex
	w     io.Writer
	color bool
}

// New returns a printer; color is used when w is a terminal and NO_COLOR is
// unset.
func New(w io.Writer) *Printer { return &Printer{w: w, color: IsTTY(w) && os.Getenv("NO_COLOR") == ""} }

// IsTTY reports whether w is a character device.
func IsTTY(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// Print writes the event's line.
func (p *Printer) Print(e event.Event) {
	line := Line(e, p.color)
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintln(p.w, line)
}

// Line formats an event: "15:04:05  build.failed          b-1234   failed after created".
func Line(e event.Event, color bool) string {
	typ, fact, c := describe(e)
	ts := e.Time.UTC().Format("15:04:05")
	res := e.Subject
	if len(res) > 28 {
		res = res[:27] + "…"
	}
	if !color || c == "" {
		return fmt.Sprintf("%s  %-22s %-28s %s", ts, typ, res, fact)
	}
	return fmt.Sprintf("%s%s%s  %s%-22s%s %-28s %s", dim, ts, reset, c, typ, reset, res, fact)
}

type data struct {
	ImageID        string          `json:"imageId"`
	Status         string          `json:"status"`
	PreviousStatus string          `json:"previousStatus"`
	State          string          `json:"state"`
	PreviousState  string          `json:"previousState"`
	Hostname       string          `json:"hostname"`
	CreatedAt      time.Time       `json:"createdAt"`
	Lines          []line          `json:"lines"`
	IdleSince      time.Time       `json:"idleSince"`
	StopAt         time.Time       `json:"stopAt"`
	IdleFor        json.RawMessage `json:"idleFor"`
	IdleSeconds    float64         `json:"idleSeconds"`
	DryRun         bool            `json:"dryRun"`
	ObservedBy     string          `json:"observedBy"`
}

type line struct {
	Level   string `json:"level"`
	Message string `json:"message"`
}

func describe(e event.Event) (typ, fact, color string) {
	typ = e.ShortType()
	var d data
	_ = json.Unmarshal(e.Data, &d) // best effort: a line is still printed
	kind, action := e.Kind(), e.Action()
	by := ""
	if d.ObservedBy != "" {
		by = " (" + d.ObservedBy + ")"
	}
	switch {
	case action == "log":
		last := ""
		if n := len(d.Lines); n > 0 {
			last = strings.TrimSpace(d.Lines[n-1].Message)
			if len(last) > 60 {
				last = last[:59] + "…"
			}
			last = ": " + last
		}
		return typ, fmt.Sprintf("%d line%s%s", len(d.Lines), plural(len(d.Lines)), last), dim
	case kind == event.KindWebhook:
		return typ, fmt.Sprintf("%d bytes", len(e.Data)), blue
	case kind == event.KindBuild:
		switch action {
		case "succeeded":
			return typ, "image " + orDash(d.ImageID) + by, green
		case "failed":
			return typ, "build failed" + by, red
		case "stuck":
			since := ""
			if !d.CreatedAt.IsZero() {
				since = " since " + d.CreatedAt.UTC().Format("15:04:05")
			}
			return typ, "still unfinished" + since, yellow
		}
		return typ, action + by, ""
	case kind == event.KindVM:
		switch action {
		case "idle":
			return typ, fmt.Sprintf("idle since %s, stops at %s", hm(d.IdleSince), hm(d.StopAt)), yellow
		case "autostopped":
			idle := ""
			if d.IdleSeconds > 0 {
				idle = " after " + (time.Duration(d.IdleSeconds) * time.Second).String() + " idle"
			} else if len(d.IdleFor) > 0 {
				var s string
				if json.Unmarshal(d.IdleFor, &s) == nil && s != "" {
					idle = " after " + s + " idle"
				}
			}
			dry := ""
			if d.DryRun {
				dry = " (dry run: not called)"
			}
			return typ, "stopped" + idle + dry, yellow
		}
		fact = action
		if d.PreviousState != "" {
			fact = d.PreviousState + " → " + action
		}
		if d.Hostname != "" {
			fact += " on " + d.Hostname
		}
		c := blue
		if action == "stopped" || action == "destroyed" {
			c = ""
		}
		return typ, fact, c
	}
	return typ, action, ""
}

func hm(t time.Time) string {
	if t.IsZero() {
		return "?"
	}
	return t.UTC().Format("15:04:05")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
