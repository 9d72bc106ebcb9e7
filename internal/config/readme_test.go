package config

import (
	"os"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// keyPaths lists every key of t as the README writes it: lists as
// "sinks.http[].url", maps as "sinks.slack[].templates".
func keyPaths(t reflect.Type, path string) []string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	list := false
	if t.Kind() == reflect.Slice {
		t, list = t.Elem(), true
	}
	if list {
		path += "[]"
	}
	if t.Kind() != reflect.Struct || t == durationType {
		return nil
	}
	var out []string
	for name, f := range fieldsOf(t) {
		p := joinPath(path, name)
		out = append(out, p)
		out = append(out, keyPaths(t.Field(f.index).Type, p)...)
	}
	sort.Strings(out)
	return out
}

var readmeKeyRE = regexp.MustCompile("^\\| `([a-z0-9_.\\[\\]]+)`( 🔒)? \\|")

// The README's configuration reference and the config structs list the same
// keys: adding a key without documenting it, or documenting one that does
// not exist, fails here.
func TestReadmeReferenceMatchesStructs(t *testing.T) {
	data, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, ref, ok := strings.Cut(string(data), "## Configuration reference")
	if !ok {
		t.Fatal("README has no \"## Configuration reference\" section")
	}
	if i := strings.Index(ref, "\n## "); i >= 0 {
		ref = ref[:i]
	}
	documented := map[string]bool{}
	for _, line := range strings.Split(ref, "\n") {
		if m := readmeKeyRE.FindStringSubmatch(line); m != nil {
			documented[m[1]] = true
		}
	}
	want := map[string]bool{}
	for _, k := range keyPaths(reflect.TypeOf(Config{}), "") {
		want[k] = true
		if !documented[k] {
			t.Errorf("README reference lacks `%s`", k)
		}
	}
	for k := range documented {
		if !want[k] {
			t.Errorf("README documents `%s`, which is not a config key", k)
		}
	}
}
