// Package headline holds the Slack sink's message templates
// (sinks.slack[].templates): Go text/template overrides of a message's
// first line, keyed by short event type.
//
// Config validation (relay check-config) and the Slack sink (relay serve)
// both parse them here, with the same functions and the same sample data,
// so a template one accepts the other cannot refuse. Each template is run
// once against a sample of every event type its key matches, so a
// misspelled field ({{.Nope}}) is an error naming the key, not a broken
// message later. Failures that depend on an event's data (nested .Data
// keys, an index into a short log tail) are not errors: the sample cannot
// know the data, and at run time the standard message is used instead.
package headline

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"sort"
	"strings"
	"text/template"
	"text/template/parse"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/event"
)

// Data is what a template sees.
type Data struct {
	// Type is the short type ("build.failed"); Kind, ID and Action its parts
	// and the resource id.
	Type, Kind, ID, Action string
	EventID                string
	Time                   time.Time
	Status, PreviousStatus string
	ImageID, Hostname      string
	// Duration is a build's run time or a stopped VM's up time ("3m12s").
	Duration string
	// Auto-stop details (vm.idle, vm.autostopped).
	IdleSince, StopAt time.Time
	IdleFor           string
	DryRun            bool
	// LogTail is the last log lines of a failed build (or of a log batch).
	LogTail []string
	// Headline is the message's default first line (Slack mrkdwn).
	Headline string
	// Data is the event's data as sent.
	Data map[string]any
}

// Set is the parsed overrides, most specific first: exact types, then
// globs in a stable order.
type Set []named

type named struct {
	key string
	t   *template.Template
}

// Parse parses each override with text/template's built-in functions only
// and runs it on sample data of every event type its key matches. Errors
// name the key as templates["key"].
func Parse(m map[string]string) (Set, error) {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		gi, gj := strings.Contains(keys[i], "*"), strings.Contains(keys[j], "*")
		if gi != gj {
			return !gi
		}
		return keys[i] < keys[j]
	})
	var out Set
	var errs []error
	for _, k := range keys {
		kp := fmt.Sprintf("templates[%q]", k)
		f, err := event.NewFilter([]string{k})
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: the key must be a short event type like build.failed: %w", kp, err))
			continue
		}
		t, err := template.New(k).Option("missingkey=zero").Parse(m[k])
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: not a Go text/template: %w", kp, err))
			continue
		}
		if err := checkFields(t); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w (a template sees %s)", kp, err, fields))
			continue
		}
		if err := trial(t, k, f); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", kp, err))
			continue
		}
		out = append(out, named{k, t})
	}
	return out, errors.Join(errs...)
}

// trial runs t on a sample of every type key matches.
func trial(t *template.Template, key string, f event.Filter) error {
	types := []string{}
	for _, typ := range append(append([]string{}, event.Types...), "vm.running", "webhook.example") {
		if f.Match(typ) {
			types = append(types, typ)
		}
	}
	if len(types) == 0 {
		// An open family member no sample stands for, like webhook.github.
		types = append(types, strings.ReplaceAll(key, "*", "x"))
	}
	for _, typ := range types {
		if err := t.Execute(io.Discard, Sample(typ)); err != nil && misspelt(err) {
			return fmt.Errorf("fails on a %s event: %w (a template sees %s)", typ, err, fields)
		}
	}
	return nil
}

// checkFields finds fields Data does not have, wherever the template uses
// them on the top-level dot (or on $), whatever the event's data: the
// trial run stops at the first failure, which may be a data-dependent one
// before the typo.
func checkFields(t *template.Template) error {
	var bad []string
	var walk func(n parse.Node, top bool)
	check := func(idents []string) {
		if len(idents) > 0 && !hasField(idents[0]) {
			bad = append(bad, "."+idents[0])
		}
	}
	pipe := func(p *parse.PipeNode, top bool) {
		if p == nil {
			return
		}
		for _, c := range p.Cmds {
			for _, a := range c.Args {
				walk(a, top)
			}
		}
	}
	walk = func(n parse.Node, top bool) {
		switch n := n.(type) {
		case *parse.ListNode:
			if n != nil {
				for _, c := range n.Nodes {
					walk(c, top)
				}
			}
		case *parse.ActionNode:
			pipe(n.Pipe, top)
		case *parse.PipeNode:
			pipe(n, top)
		case *parse.FieldNode:
			if top {
				check(n.Ident)
			}
		case *parse.ChainNode:
			walk(n.Node, top)
		case *parse.VariableNode:
			if len(n.Ident) > 1 && n.Ident[0] == "$" {
				check(n.Ident[1:])
			}
		case *parse.IfNode:
			pipe(n.Pipe, top)
			walk(n.List, top)
			walk(n.ElseList, top)
		case *parse.RangeNode:
			// Inside range and with, dot is something else.
			pipe(n.Pipe, top)
			walk(n.List, false)
			walk(n.ElseList, top)
		case *parse.WithNode:
			pipe(n.Pipe, top)
			walk(n.List, false)
			walk(n.ElseList, top)
		}
	}
	for _, tt := range t.Templates() {
		if tt.Tree != nil {
			walk(tt.Tree.Root, true)
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("no field %s", strings.Join(bad, ", "))
	}
	return nil
}

func hasField(name string) bool {
	_, ok := reflect.TypeOf(Data{}).FieldByName(name)
	return ok
}

// misspelt reports an error that every event would hit: a field Data does
// not have ({{.Subject}}). Other failures depend on the event's data (a
// nested .Data.repository.name on a sample with no data, an index past a
// short log tail); at run time such a message falls back to the standard
// one with a warning, so they do not stop the relay from starting.
func misspelt(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "can't evaluate field") && strings.Contains(msg, "headline.Data")
}

// fields lists what Data offers, for error messages.
const fields = ".Type .Kind .ID .Action .EventID .Time .Status .PreviousStatus .ImageID .Hostname .Duration .IdleSince .StopAt .IdleFor .DryRun .LogTail .Headline .Data"

// Lookup is the override for shortType, or nil.
func (s Set) Lookup(shortType string) *template.Template {
	for _, nt := range s {
		if f, _ := event.NewFilter([]string{nt.key}); f.Match(shortType) {
			return nt.t
		}
	}
	return nil
}

// Exec runs t on d and trims the result.
func Exec(t *template.Template, d Data) (string, error) {
	var b bytes.Buffer
	if err := t.Execute(&b, d); err != nil {
		return "", err
	}
	return strings.TrimSpace(b.String()), nil
}

// Sample is example data for an event of shortType, with the fields such an
// event fills.
func Sample(shortType string) Data {
	t := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	kind, action, _ := strings.Cut(shortType, ".")
	d := Data{Type: shortType, Kind: kind, ID: "sample-1", Action: action, EventID: "0123abcd", Time: t,
		Headline: "Sample " + shortType, Data: map[string]any{}}
	switch {
	case action == "log":
		d.LogTail = []string{"a log line"}
	case kind == event.KindBuild:
		d.Status, d.PreviousStatus, d.Duration, d.ImageID = action, "created", "1m", "img-1"
		d.LogTail = []string{"a log line"}
	case kind == event.KindVM:
		d.Status, d.PreviousStatus, d.ImageID, d.Hostname = action, "created", "img-1", "vm-1.example"
		d.IdleSince, d.StopAt, d.IdleFor = t.Add(-time.Hour), t.Add(5*time.Minute), "1h"
	}
	return d
}
