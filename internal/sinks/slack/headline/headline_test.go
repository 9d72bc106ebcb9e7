package headline

import (
	"reflect"
	"strings"
	"testing"
)

// The field list in error messages is the real one.
func TestFieldsListIsComplete(t *testing.T) {
	var names []string
	typ := reflect.TypeOf(Data{})
	for i := 0; i < typ.NumField(); i++ {
		names = append(names, "."+typ.Field(i).Name)
	}
	if got := strings.Join(names, " "); got != fields {
		t.Fatalf("fields = %q\nwant     %q", fields, got)
	}
}

func TestParseRunsEveryMatchingType(t *testing.T) {
	for _, tc := range []struct {
		key, text string
		ok        bool
	}{
		{"build.failed", "{{.ID}} {{.Status}} {{index .LogTail 0}}", true},
		{"build.failed", "{{.Subject}}", false},
		// Log events have no status card: a log tail is there, .Data too.
		{"*.log", "{{len .LogTail}} lines {{.Data.vmId}}", true},
		// Data-dependent failures are left to run time (the standard
		// message is used if it fails there).
		{"*", "{{index .LogTail 0}}", true},
		{"webhook.github", "{{.Data.action}}", true},
		{"webhook.github", "{{.Data.repository.full_name}}", true},
		{"*", "{{.Data.x.y}} {{.Nope}}", false},
		{"*", "{{range .LogTail}}{{.}}{{end}}{{with .Data}}{{.anything}}{{end}}", true},
		{"*", "{{range .LogTail}}{{$.Nope}}{{end}}", false},
		{"*", "{{if .DryRun}}dry{{else}}{{.Nope}}{{end}}", false},
		{"com.cakework.build.failed", "x", false},
	} {
		_, err := Parse(map[string]string{tc.key: tc.text})
		if (err == nil) != tc.ok {
			t.Errorf("%s: %q: err = %v, want ok=%v", tc.key, tc.text, err, tc.ok)
		}
	}
	s, err := Parse(map[string]string{"build.*": "b", "build.failed": "f"})
	if err != nil {
		t.Fatal(err)
	}
	if out, _ := Exec(s.Lookup("build.failed"), Sample("build.failed")); out != "f" {
		t.Fatalf("exact key must win over a glob: %q", out)
	}
	if s.Lookup("vm.started") != nil {
		t.Fatal("lookup matched an unrelated type")
	}
}
