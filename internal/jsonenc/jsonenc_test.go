package jsonenc

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"
)

func TestAppendStringMatchesJSONMarshal(t *testing.T) {
	for _, s := range []string{"", "plain-id_1.2", `quote " and \ back`, "<a&b>", "tab\tnl\n\x01", "é ü 日本", "\u2028\u2029", "bad \xff utf-8"} {
		want, _ := json.Marshal(s)
		if got := AppendString([]byte("x"), s); !bytes.Equal(got, append([]byte("x"), want...)) {
			t.Errorf("AppendString(%q) = %s, want x%s", s, got, want)
		}
	}
}

func TestAppendTimeMatchesMarshalJSON(t *testing.T) {
	for _, tm := range []time.Time{{}, time.Date(2026, 3, 4, 5, 6, 7, 891000000, time.FixedZone("x", 3600)), time.Unix(0, 1).UTC()} {
		want, _ := tm.MarshalJSON()
		if got, err := AppendTime(nil, tm); err != nil || !bytes.Equal(got, want) {
			t.Errorf("AppendTime(%v) = %s, %v; want %s", tm, got, err, want)
		}
	}
	if _, err := AppendTime(nil, time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)); err == nil {
		t.Error("year 10000 encoded")
	}
}
