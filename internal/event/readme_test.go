package event

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// Every example in the README's event catalogue is a valid event whose type
// is the one its heading names, and the catalogue covers every kind.
func TestReadmeEventExamples(t *testing.T) {
	data, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, cat, ok := strings.Cut(string(data), "## Event catalogue")
	if !ok {
		t.Fatal("README has no event catalogue")
	}
	cat, _, _ = strings.Cut(cat, "\n## ")
	re := regexp.MustCompile("(?s)#### `([a-z_]+\\.[a-z_]+)`\\n\\n```json\\n(.*?)\\n```")
	examples := re.FindAllStringSubmatch(cat, -1)
	kinds := map[string]bool{}
	for _, m := range examples {
		e, err := Decode([]byte(m[2]))
		if err != nil {
			t.Errorf("example %s: %v", m[1], err)
			continue
		}
		if e.ShortType() != m[1] {
			t.Errorf("example under %s has type %s", m[1], e.Type)
		}
		want := "cakework." + e.Kind() + "." + e.Subject + "." + e.Action()
		if e.Kind() == KindWebhook {
			want = "cakework.webhook." + e.Action()
		}
		if got := e.NATSSubject("cakework"); got != want {
			t.Errorf("example %s: subject %s, want %s", m[1], got, want)
		}
		kinds[e.Kind()] = true
	}
	if len(examples) < 10 {
		t.Errorf("only %d examples", len(examples))
	}
	for _, k := range []string{KindBuild, KindVM, KindFunctionBuild, KindWebhook} {
		if !kinds[k] {
			t.Errorf("no %s example", k)
		}
	}
}
