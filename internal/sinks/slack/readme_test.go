package slack

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// The README shows golden messages; they must be the golden files as they
// are, so what users read is what the code sends.
func TestReadmeQuotesGoldenFiles(t *testing.T) {
	data, err := os.ReadFile("../../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile("(?s)<!-- golden:([a-z_]+) -->\\n```\\n(.*?)\\n```\\n<!-- /golden -->")
	found := re.FindAllStringSubmatch(string(data), -1)
	if len(found) < 2 {
		t.Fatalf("README quotes %d golden files, want the build failure and the auto-stop", len(found))
	}
	for _, m := range found {
		want, err := os.ReadFile("testdata/" + m[1] + ".golden")
		if err != nil {
			t.Fatal(err)
		}
		if m[2] != strings.TrimRight(string(want), "\n") {
			t.Errorf("README's %s differs from testdata/%s.golden; paste the file again", m[1], m[1])
		}
	}
}
