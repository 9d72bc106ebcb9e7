package ingest

import (
	"fmt"
	"sync/atomic"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
)

// maxJSONDepth is how deeply a webhook body's JSON may nest. Deeper bodies
// are refused at ingest: every sink would fail to decode them and
// dead-letter them.
const maxJSONDepth = 512

// bodyBudget is the body bytes in flight across all requests.
type bodyBudget struct {
	max   int64
	used  atomic.Int64
	gauge prometheus.Gauge
}

// acquire reserves n bytes, or reports false when that would pass max.
func (b *bodyBudget) acquire(n int64) bool {
	for {
		cur := b.used.Load()
		if cur+n > b.max {
			return false
		}
		if b.used.CompareAndSwap(cur, cur+n) {
			if b.gauge != nil {
				b.gauge.Add(float64(n))
			}
			return true
		}
	}
}

func (b *bodyBudget) release(n int64) {
	b.used.Add(-n)
	if b.gauge != nil {
		b.gauge.Sub(float64(n))
	}
}

// deliverable says what makes body something the relay could not deliver
// (invalid UTF-8, JSON nested deeper than maxJSONDepth), or "" when it is
// fine. Whether it is JSON at all is the decoder's to say.
func deliverable(body []byte) string {
	if !utf8.Valid(body) {
		return fmt.Sprintf("the body is not valid UTF-8 (first bad byte at offset %d); send JSON encoded as UTF-8", invalidUTF8At(body))
	}
	depth, inString, escaped := 0, false, false
	for _, c := range body {
		if inString {
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
			continue
		}
		switch c {
		case '"':
			inString = true
		case '{', '[':
			depth++
			if depth > maxJSONDepth {
				return fmt.Sprintf("the JSON nests more than %d levels deep; send a flatter body", maxJSONDepth)
			}
		case '}', ']':
			depth--
		}
	}
	return ""
}

func invalidUTF8At(b []byte) int {
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n <= 1 {
			return i
		}
		i += n
	}
	return len(b)
}
