package cakework

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Layouts the API is known to send or accept. Go's parser accepts a
// fractional second after the seconds field even when the layout has none, so
// each layout covers both the ".331" and the whole-second variants.
const (
	// QueryTimeLayout is the form log queries take for from and to:
	// ISO 8601 with a numeric zone and no colon.
	QueryTimeLayout = "2006-01-02T15:04:05-0700"
	// WindowTimeLayout is the form log responses use for from and to.
	WindowTimeLayout = "2006-01-02 15:04:05 UTC"
)

// parseLayouts are tried in order for anything that is not unix milliseconds
// or the " UTC" window form. Zone-less layouts are read as UTC, which is what
// the API meant by them.
var parseLayouts = [...]string{
	"2006-01-02T15:04:05Z07:00", // 2023-03-03T20:22:39.096Z, 2023-03-09T02:43:30.243-08:00
	"2006-01-02T15:04:05Z0700",  // 2022-07-19T13:32:56+0000 (the query form)
	"2006-01-02 15:04:05",       // 2023-02-24 20:29:40.331 (no zone: UTC)
	"2006-01-02T15:04:05",       // same with a T; not seen, but cheap to accept
}

// maxUnixMilliDigits bounds the unix-millisecond form: 15 digits reach past
// year 9999, so anything longer is garbage, not a time.
const maxUnixMilliDigits = 15

var (
	minTime = time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC)
	maxTime = time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC)
)

// ParseTime reads any of the timestamp forms the Cakework API uses and
// returns the instant in UTC:
//
//	2023-02-24 20:29:40.331        (no zone: UTC)
//	2023-03-09T02:43:30.243-08:00  (RFC 3339 with offset)
//	2023-03-03T20:22:39.096Z       (RFC 3339, Z)
//	2023-03-07 06:12:56 UTC        (log window bounds)
//	1676625938460                  (unix milliseconds, log lines)
//
// plus the query form 2022-07-19T13:32:56+0000. Times outside years 1–9999
// are rejected so that every parsed time can be formatted again.
func ParseTime(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, errors.New("cakework: empty timestamp")
	}
	if isDigits(s) {
		if len(s) > maxUnixMilliDigits {
			return time.Time{}, fmt.Errorf("cakework: timestamp %q: too many digits for unix milliseconds", clip(s))
		}
		ms, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return time.Time{}, fmt.Errorf("cakework: timestamp %q: %w", clip(s), err)
		}
		return inRange(time.UnixMilli(ms).UTC(), s)
	}
	if rest, ok := strings.CutSuffix(s, " UTC"); ok {
		t, err := time.ParseInLocation("2006-01-02 15:04:05", rest, time.UTC)
		if err != nil {
			return time.Time{}, fmt.Errorf("cakework: timestamp %q: not a known format", clip(s))
		}
		return inRange(t.UTC(), s)
	}
	for _, layout := range parseLayouts {
		if t, err := time.ParseInLocation(layout, s, time.UTC); err == nil {
			return inRange(t.UTC(), s)
		}
	}
	return time.Time{}, fmt.Errorf("cakework: timestamp %q: not a known format", clip(s))
}

func inRange(t time.Time, s string) (time.Time, error) {
	if t.Before(minTime) || t.After(maxTime) {
		return time.Time{}, fmt.Errorf("cakework: timestamp %q: out of range", clip(s))
	}
	return t, nil
}

// FormatQueryTime renders t for the from/to query parameters of the log
// endpoints, in UTC: 2022-07-19T13:32:56+0000. The form has no fractional
// second, so t is truncated to the whole second: a window's from therefore
// covers its whole first second, and callers that resume from a line's time
// see that second again and must drop the lines they already have.
func FormatQueryTime(t time.Time) string {
	return t.UTC().Format(QueryTimeLayout)
}

// FormatWindowTime renders t the way log responses carry from and to
// (2023-03-07 06:12:56 UTC). The simulator uses it; clients pass the server's
// strings back verbatim and never need it.
func FormatWindowTime(t time.Time) string {
	return t.UTC().Format(WindowTimeLayout)
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// clip keeps error messages short when the input is garbage.
func clip(s string) string {
	const max = 64
	if len(s) > max {
		return s[:max] + "…"
	}
	return s
}
