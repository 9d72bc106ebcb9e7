// Package jsonenc appends JSON values byte for byte as encoding/json writes
// them, for the hot paths that encode a fixed shape without reflection.
// Every caller's shape has a test that compares it with json.Marshal.
package jsonenc

import (
	"encoding/json"
	"time"
)

// AppendString appends s as a JSON string, escaped as json.Marshal does
// (HTML-safe, invalid UTF-8 replaced).
func AppendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// AppendTime appends t as time.Time.MarshalJSON does: RFC 3339 with
// nanoseconds, quoted. Like MarshalJSON it refuses years outside 0–9999.
func AppendTime(b []byte, t time.Time) ([]byte, error) {
	tb, err := t.MarshalJSON()
	if err != nil {
		return b, err
	}
	return append(b, tb...), nil
}
