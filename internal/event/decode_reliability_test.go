package event

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// FuzzDecode feeds Decode what the bus or a DLQ replay could carry: it never
// panics, and an event it accepts survives a round trip and has a valid
// subject and an order key.
func FuzzDecode(f *testing.F) {
	ok, _ := New(KindVM, "vm-1", "started", ID("vm", "vm-1", "started"), time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC), map[string]any{"state": "started"})
	raw, _ := json.Marshal(ok)
	f.Add(raw)
	wh, _ := NewWebhook("github", ID("webhook", "github", "delivery", "d1"), time.Unix(0, 0), json.RawMessage(`{"a":[1,2,{"b":null}]}`))
	raw, _ = json.Marshal(wh)
	f.Add(raw)
	for _, s := range []string{
		``, `null`, `{}`, `[]`, `"x"`,
		`{"specversion":"1.0","id":"x","type":"com.cakework.vm.started","subject":"a b","time":"2025-01-01T00:00:00Z"}`,
		`{"specversion":"1.0","id":"x","type":"com.cakework.","subject":"a","time":"2025-01-01T00:00:00Z","data":{}}`,
		`{"specversion":"1.0","id":"x","type":"com.cakework.vm.>","subject":"a","time":"bad"}`,
		`{"specversion":"1.0","id":"x","type":"com.cakework.vm.started","subject":"a","time":"2025-01-01T00:00:00+14:00","data":"\u0000"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := Decode(b)
		if err != nil {
			return
		}
		_ = e.ShortType()
		_ = e.Kind()
		_ = e.Action()
		if !strings.HasPrefix(e.OrderKey(), e.Kind()+"/") {
			t.Fatalf("order key %q", e.OrderKey())
		}
		if !ValidToken(e.Subject) {
			t.Fatalf("Decode accepted subject %q", e.Subject)
		}
		again, err := json.Marshal(e)
		if err != nil {
			// Data that is not JSON cannot be re-encoded: Decode accepted
			// bytes json.Unmarshal took as a RawMessage, so this is valid.
			t.Fatalf("re-encode an accepted event: %v", err)
		}
		e2, err := Decode(again)
		if err != nil {
			t.Fatalf("an accepted event does not decode after a round trip: %v\n%s", err, again)
		}
		if e2.ID != e.ID || e2.Type != e.Type || e2.Subject != e.Subject || !e2.Time.Equal(e.Time) {
			t.Fatalf("round trip changed the event:\n%+v\n%+v", e, e2)
		}
	})
}

// FuzzFilter: any glob list NewFilter accepts never panics in Match or
// Subjects, "*" matches every type, and a glob without '*' matches itself.
// The NATS subjects must cover every type Match accepts.
func FuzzFilter(f *testing.F) {
	for _, s := range []string{"*", "vm.*", "build.failed", "*.log", "vm.auto*", "webhook.*", "a*b*c", "[", "**", "webhook.gith*"} {
		f.Add(s, "vm.started")
	}
	f.Fuzz(func(t *testing.T, glob, typ string) {
		fl, err := NewFilter([]string{glob})
		if err != nil {
			return
		}
		m := fl.Match(typ)
		subs := fl.Subjects("cakework")
		if len(subs) == 0 {
			t.Fatalf("no subjects for %q", glob)
		}
		if glob == "*" && !m {
			t.Fatalf("* did not match %q", typ)
		}
		if !strings.Contains(glob, "*") && !fl.Match(glob) {
			t.Fatalf("%q does not match itself", glob)
		}
		// Coverage: when a well-formed type matches, some subject covers it.
		kind, action, ok := strings.Cut(typ, ".")
		if !m || !ok || !ValidToken(kind) || action == "" || strings.ContainsAny(action, " .*>") {
			return
		}
		ev := Event{Type: TypePrefix + typ, Subject: "id1"}
		subj := ev.NATSSubject("cakework")
		for _, s := range subs {
			if subjectMatch(s, subj) {
				return
			}
		}
		t.Fatalf("glob %q matches %q but its subjects %v do not cover %s", glob, typ, subs, subj)
	})
}

// subjectMatch is NATS subject matching: '*' one token, '>' the rest.
func subjectMatch(filter, subj string) bool {
	ft, st := strings.Split(filter, "."), strings.Split(subj, ".")
	for i, f := range ft {
		if f == ">" {
			return len(st) > i
		}
		if i >= len(st) || (f != "*" && f != st[i]) {
			return false
		}
	}
	return len(ft) == len(st)
}
