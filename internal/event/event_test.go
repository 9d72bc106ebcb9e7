package event

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestSubjectMapping(t *testing.T) {
	at := time.Date(2023, 3, 9, 2, 43, 30, 0, time.FixedZone("x", -8*3600))
	tests := []struct {
		kind, id, action   string
		wantType, wantSubj string
	}{
		{KindBuild, "b1", "succeeded", "com.cakework.build.succeeded", "cakework.build.b1.succeeded"},
		{KindVM, "e784996f346483", "started", "com.cakework.vm.started", "cakework.vm.e784996f346483.started"},
		{KindVM, "v-1", "suspended", "com.cakework.vm.suspended", "cakework.vm.v-1.suspended"},
		{KindFunctionBuild, "f_1", "log", "com.cakework.function_build.log", "cakework.function_build.f_1.log"},
	}
	for _, tt := range tests {
		e, err := New(tt.kind, tt.id, tt.action, "x", at, map[string]string{"a": "b"})
		if err != nil {
			t.Fatal(err)
		}
		if e.Type != tt.wantType || e.NATSSubject("cakework") != tt.wantSubj {
			t.Errorf("%s/%s/%s: got %s %s", tt.kind, tt.id, tt.action, e.Type, e.NATSSubject("cakework"))
		}
		if e.Time.Location() != time.UTC {
			t.Errorf("time not UTC: %v", e.Time)
		}
		if err := e.Validate(); err != nil {
			t.Errorf("validate: %v", err)
		}
	}
	w, err := NewWebhook("github", "id", at, []byte(`{"a":1}`))
	if err != nil || w.NATSSubject("cakework") != "cakework.webhook.github" || w.ShortType() != "webhook.github" {
		t.Fatalf("webhook: %v %s", err, w.NATSSubject("cakework"))
	}
}

func TestBadTokensNeverReachASubject(t *testing.T) {
	for _, id := range []string{"", "a.b", "a*", ">", "a b", "a/b", strings.Repeat("x", 129), "ü"} {
		if _, err := New(KindBuild, id, "failed", "x", time.Now(), nil); err == nil {
			t.Errorf("id %q accepted", id)
		}
		if _, err := New(KindVM, "ok", id, "x", time.Now(), nil); err == nil {
			t.Errorf("state %q accepted", id)
		}
	}
	if _, err := New(KindBuild, strings.Repeat("x", 128), "failed", "x", time.Now(), nil); err != nil {
		t.Errorf("128 chars rejected: %v", err)
	}
}

func TestIDsAreDeterministic(t *testing.T) {
	a, b := BuildStatusID("b", "succeeded"), BuildStatusID("b", "succeeded")
	if a != b {
		t.Fatal("same build change, different id")
	}
	if BuildStatusID("b", "succeeded") == BuildStatusID("b", "failed") {
		t.Fatal("different changes share an id")
	}
	t1 := time.Date(2023, 3, 9, 10, 43, 30, 243e6, time.UTC)
	t2 := t1.In(time.FixedZone("pst", -8*3600))
	if VMStateID("v", "started", t1) != VMStateID("v", "started", t2) {
		t.Fatal("same instant in two zones gives two ids")
	}
	if VMStateID("v", "started", t1) == VMStateID("v", "started", t1.Add(time.Millisecond)) {
		t.Fatal("two visits to a state share an id")
	}
	if ID("ab", "c") == ID("a", "bc") {
		t.Fatal("parts are not delimited")
	}
	if WebhookID("gh", "", []byte("x")) == WebhookID("gh", "", []byte("y")) {
		t.Fatal("bodies not distinguished")
	}
}

func TestFilter(t *testing.T) {
	tests := []struct {
		globs    []string
		typ      string
		want     bool
		subjects string
	}{
		{[]string{"*"}, "vm.log", true, "c.>"},
		{[]string{"build.*"}, "build.failed", true, "c.build.>"},
		{[]string{"build.*"}, "vm.started", false, "c.build.>"},
		{[]string{"build.failed", "vm.autostopped"}, "vm.autostopped", true, "c.build.*.failed c.vm.*.autostopped"},
		{[]string{"build.failed"}, "build.succeeded", false, "c.build.*.failed"},
		{[]string{"*.log"}, "function_build.log", true, "c.>"},
		{[]string{"vm.auto*"}, "vm.autostopped", true, "c.vm.>"},
		{[]string{"vm.auto*"}, "vm.idle", false, "c.vm.>"},
		{[]string{"webhook.github"}, "webhook.github", true, "c.webhook.github"},
		{[]string{"webhook.*"}, "webhook.x", true, "c.webhook.*"},
		{nil, "anything", true, "c.>"},
	}
	for _, tt := range tests {
		f, err := NewFilter(tt.globs)
		if err != nil {
			t.Fatal(err)
		}
		if got := f.Match(tt.typ); got != tt.want {
			t.Errorf("%v match %s = %v", tt.globs, tt.typ, got)
		}
		if got := strings.Join(f.Subjects("c"), " "); got != tt.subjects {
			t.Errorf("%v subjects = %q, want %q", tt.globs, got, tt.subjects)
		}
	}
}

// The hand-written hot-path versions must agree with the definitions they
// replace: the regexp for tokens, fmt's "%d:%s;" for ids (ids already
// published must not change).
func TestValidTokenAndIDMatchTheirDefinitions(t *testing.T) {
	re := regexp.MustCompile(`^[A-Za-z0-9_-]{1,128}$`)
	slow := func(parts ...string) string {
		h := sha256.New()
		for _, p := range parts {
			fmt.Fprintf(h, "%d:%s;", len(p), p)
		}
		return hex.EncodeToString(h.Sum(nil)[:16])
	}
	cases := []string{"", "a", "build-1_X", strings.Repeat("a", 128), strings.Repeat("a", 129), "a.b", "a b", "ü", "a\n", "-", "_"}
	for _, c := range cases {
		if got, want := ValidToken(c), re.MatchString(c); got != want {
			t.Errorf("ValidToken(%q) = %v, want %v", c, got, want)
		}
		if got, want := ID("build", c, "succeeded"), slow("build", c, "succeeded"); got != want {
			t.Errorf("ID(build, %q) = %s, want %s", c, got, want)
		}
	}
	if got, want := ID(), slow(); got != want {
		t.Errorf("ID() = %s, want %s", got, want)
	}
}

func TestCheckGlob(t *testing.T) {
	for _, c := range []struct {
		glob string
		ok   bool
		want string // in the error
	}{
		{"*", true, ""},
		{"build.*", true, ""},
		{"*.failed", true, ""},
		{"*.running", true, ""}, // vm.running: any state the API reports
		{"vm.running", true, ""},
		{"vm.st*", true, ""},
		{"vm.auto*", true, ""},
		{"w*.github", true, ""},
		{"webhook.github", true, ""},
		{"webhook.*", true, ""},
		{"*.log", true, ""},
		{"function_build.*", true, ""},
		{"com.cakework.build.failed", false, `did you mean "build.failed"`},
		{"build.suceeded", false, `did you mean "build.succeeded"`},
		{"buidl.*", false, `did you mean "build.*"`},
		{"function_build.failed", false, "matches no event"},
		{"vm.", false, "matches no event"},
		{"vm.a.b", false, "matches no event"},
		{"webhook", false, "matches no event"},
	} {
		err := CheckGlob(c.glob)
		if (err == nil) != c.ok || (err != nil && !strings.Contains(err.Error(), c.want)) {
			t.Errorf("CheckGlob(%q) = %v, want ok=%v %q", c.glob, err, c.ok, c.want)
		}
	}
}
