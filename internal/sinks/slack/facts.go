package slack

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/event"
)

// facts is what the sink knows about one build or VM: the latest status and
// the details a card shows. It is kept in the parent record, so events that
// carry no resource (vm.idle, vm.autostopped, logs) still show the image and
// hostname.
type facts struct {
	Kind       string    `json:"kind"`
	ID         string    `json:"id"`
	Status     string    `json:"status,omitempty"`
	Previous   string    `json:"previous,omitempty"`
	ImageID    string    `json:"imageId,omitempty"`
	Hostname   string    `json:"hostname,omitempty"`
	CreatedAt  time.Time `json:"createdAt,omitzero"`
	StartedAt  time.Time `json:"startedAt,omitzero"`
	FinishedAt time.Time `json:"finishedAt,omitzero"`
	// LastStatusAt is the time of the newest status event applied, so a
	// redelivered older event cannot move the status backwards.
	LastStatusAt time.Time `json:"lastStatusAt,omitzero"`
	Stuck        bool      `json:"stuck,omitempty"`
	// Auto-stop: set by vm.idle, completed by vm.autostopped, cleared when
	// the VM changes state again.
	IdleSince   time.Time     `json:"idleSince,omitzero"`
	StopAt      time.Time     `json:"stopAt,omitzero"`
	IdleFor     time.Duration `json:"idleFor,omitempty"`
	DryRun      bool          `json:"dryRun,omitempty"`
	AutoStopped bool          `json:"autoStopped,omitempty"`
}

// threaded reports whether events of this kind get a parent message.
func threaded(kind string) bool { return kind == event.KindBuild || kind == event.KindVM }

// statusEvent reports whether e is a plain status change, fully shown by
// the card (so the first one needs no thread reply of its own).
func statusEvent(e event.Event) bool {
	switch e.Kind() {
	case event.KindBuild:
		switch e.Action() {
		case "created", "succeeded", "failed":
			return true
		}
	case event.KindVM:
		switch e.Action() {
		case "log", "idle", "autostopped":
			return false
		}
		return true
	}
	return false
}

func buildFinished(status string) bool { return status == "succeeded" || status == "failed" }

// data is an event's data, read leniently: producers are written by other
// people and missing or oddly typed fields must never break a message.
type data map[string]any

func parseData(e event.Event) data {
	var d data
	if len(e.Data) > 0 {
		_ = json.Unmarshal(e.Data, &d)
	}
	if d == nil {
		d = data{}
	}
	return d
}

func (d data) str(keys ...string) string {
	for _, k := range keys {
		switch v := d[k].(type) {
		case string:
			if v != "" {
				return v
			}
		case float64:
			return strconv.FormatFloat(v, 'f', -1, 64)
		case bool:
			return strconv.FormatBool(v)
		}
	}
	return ""
}

func (d data) time(keys ...string) time.Time {
	for _, k := range keys {
		switch v := d[k].(type) {
		case string:
			for _, layout := range []string{time.RFC3339Nano, time.RFC3339} {
				if t, err := time.Parse(layout, v); err == nil {
					return t.UTC()
				}
			}
		case float64:
			// Unix milliseconds (the relay's log timestamps), or seconds.
			if v > 1e11 {
				return time.UnixMilli(int64(v)).UTC()
			}
			if v > 0 {
				return time.Unix(int64(v), 0).UTC()
			}
		}
	}
	return time.Time{}
}

// dur reads a duration given as a Go duration string ("30m"), or as a
// number of seconds.
func (d data) dur(keys ...string) time.Duration {
	for _, k := range keys {
		switch v := d[k].(type) {
		case string:
			if x, err := time.ParseDuration(v); err == nil && x > 0 {
				return x
			}
			if x, err := strconv.ParseFloat(v, 64); err == nil && x > 0 {
				return time.Duration(x * float64(time.Second))
			}
		case float64:
			if v > 0 && v < math.MaxInt64/float64(time.Second) {
				return time.Duration(v * float64(time.Second))
			}
		}
	}
	return 0
}

func (d data) boolean(keys ...string) (bool, bool) {
	for _, k := range keys {
		if v, ok := d[k].(bool); ok {
			return v, true
		}
	}
	return false, false
}

// logLines formats the lines of a log event: "03:04:05 message", with the
// level when it is not plain info.
func (d data) logLines() []string {
	raw, _ := d["lines"].([]any)
	out := make([]string, 0, len(raw))
	for _, r := range raw {
		m, ok := r.(map[string]any)
		if !ok {
			continue
		}
		l := data(m)
		msg := strings.TrimRight(l.str("message", "msg", "text", "line"), "\r\n")
		var b strings.Builder
		if t := l.time("time", "timestamp"); !t.IsZero() {
			b.WriteString(t.Format("15:04:05") + " ")
		}
		if lv := strings.ToUpper(l.str("level")); lv != "" && lv != "INFO" {
			b.WriteString(lv + " ")
		}
		b.WriteString(msg)
		out = append(out, clip(b.String(), 300))
	}
	return out
}

// apply folds what e says about its resource into f.
func (f *facts) apply(e event.Event, d data) {
	f.Kind, f.ID = e.Kind(), e.Subject
	if v := d.str("imageId", "image_id", "image"); v != "" {
		f.ImageID = v
	}
	if v := d.str("hostname", "host"); v != "" {
		f.Hostname = v
	}
	if t := d.time("createdAt"); !t.IsZero() {
		f.CreatedAt = t
	}
	action := e.Action()
	switch {
	case action == "log":
		return
	case e.Kind() == event.KindBuild && action == "stuck":
		f.Stuck = true
		return
	case e.Kind() == event.KindVM && action == "idle":
		f.IdleSince = d.time("idleSince", "lastActivity", "lastActivityAt")
		f.StopAt = d.time("stopAt", "stopsAt")
		f.IdleFor = d.dur("idleFor", "idleDuration", "idle", "idleSeconds", "idleAfter")
		f.DryRun, _ = d.boolean("dryRun", "dry_run")
		return
	case e.Kind() == event.KindVM && action == "autostopped":
		if t := d.time("idleSince", "lastActivity", "lastActivityAt"); !t.IsZero() {
			f.IdleSince = t
		}
		if v := d.dur("idleFor", "idleDuration", "idle", "idleSeconds", "idleAfter"); v > 0 {
			f.IdleFor = v
		}
		f.DryRun, _ = d.boolean("dryRun", "dry_run")
		f.AutoStopped = true
		f.StopAt = firstTime(d.time("stoppedAt", "stopAt"), e.Time)
		if f.IdleFor == 0 && !f.IdleSince.IsZero() && f.StopAt.After(f.IdleSince) {
			f.IdleFor = f.StopAt.Sub(f.IdleSince)
		}
		if !f.DryRun && !e.Time.Before(f.LastStatusAt) {
			f.Previous, f.Status = f.Status, "stopped"
			f.LastStatusAt = e.Time
			f.FinishedAt = f.StopAt
		}
		return
	case !statusEvent(e):
		return
	}
	if e.Time.Before(f.LastStatusAt) {
		// An older status redelivered after a newer one: keep the newer.
		return
	}
	prev := d.str("previousStatus", "previousState")
	if prev == "" {
		prev = f.Status
	}
	f.Previous, f.Status, f.LastStatusAt = prev, action, e.Time
	switch e.Kind() {
	case event.KindBuild:
		if buildFinished(action) {
			f.FinishedAt = firstTime(d.time("updatedAt"), e.Time)
			f.Stuck = false
		}
	case event.KindVM:
		// A new state ends any idle period the card was showing.
		f.IdleSince, f.StopAt, f.IdleFor, f.DryRun, f.AutoStopped = time.Time{}, time.Time{}, 0, false, false
		switch action {
		case "started":
			f.StartedAt, f.FinishedAt = firstTime(d.time("updatedAt"), e.Time), time.Time{}
		case "stopped", "destroyed":
			f.FinishedAt = firstTime(d.time("updatedAt"), e.Time)
		}
	}
}

func firstTime(ts ...time.Time) time.Time {
	for _, t := range ts {
		if !t.IsZero() {
			return t.UTC()
		}
	}
	return time.Time{}
}

// duration is a build's run time, or a VM's time since it started (until
// it stopped).
func (f facts) duration() time.Duration {
	start := f.CreatedAt
	if f.Kind == event.KindVM {
		start = f.StartedAt
	}
	if start.IsZero() || f.FinishedAt.IsZero() || f.FinishedAt.Before(start) {
		return 0
	}
	return f.FinishedAt.Sub(start)
}

// human formats a duration for people: 3m12s, 2h5m, 45s.
func human(d time.Duration) string {
	if d <= 0 {
		return ""
	}
	switch {
	case d < time.Minute:
		return d.Round(time.Second).String()
	case d < time.Hour:
		return strings.TrimSuffix(d.Round(time.Second).String(), "0s")
	default:
		d = d.Round(time.Minute)
		h, m := int(d/time.Hour), int(d%time.Hour/time.Minute)
		if m == 0 {
			return fmt.Sprintf("%dh", h)
		}
		return fmt.Sprintf("%dh%dm", h, m)
	}
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	// Cut on a rune boundary.
	for n > 0 && n < len(s) && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n] + "…"
}

func plural(n int, one, many string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, one)
	}
	return fmt.Sprintf("%d %s", n, many)
}
