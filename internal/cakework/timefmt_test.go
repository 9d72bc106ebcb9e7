package cakework

import (
	"encoding/json"
	"testing"
	"time"
)

func TestParseTime(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want time.Time
	}{
		{"no zone means UTC", "2023-02-24 20:29:40.331", time.Date(2023, 2, 24, 20, 29, 40, 331e6, time.UTC)},
		{"no zone whole second", "2023-02-24 20:29:40", time.Date(2023, 2, 24, 20, 29, 40, 0, time.UTC)},
		{"offset with colon", "2023-03-09T02:43:30.243-08:00", time.Date(2023, 3, 9, 10, 43, 30, 243e6, time.UTC)},
		{"Z", "2023-03-03T20:22:39.096Z", time.Date(2023, 3, 3, 20, 22, 39, 96e6, time.UTC)},
		{"window form", "2023-03-07 06:12:56 UTC", time.Date(2023, 3, 7, 6, 12, 56, 0, time.UTC)},
		{"unix ms", "1676625938460", time.Date(2023, 2, 17, 9, 25, 38, 460e6, time.UTC)},
		{"query form", "2022-07-19T13:32:56+0000", time.Date(2022, 7, 19, 13, 32, 56, 0, time.UTC)},
		{"query form, other zone", "2022-07-19T13:32:56+0230", time.Date(2022, 7, 19, 11, 2, 56, 0, time.UTC)},
		{"T without zone", "2023-02-24T20:29:40.331", time.Date(2023, 2, 24, 20, 29, 40, 331e6, time.UTC)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseTime(tc.in)
			if err != nil {
				t.Fatalf("ParseTime(%q): %v", tc.in, err)
			}
			if !got.Equal(tc.want) || got.Location() != time.UTC {
				t.Fatalf("ParseTime(%q) = %v (%v), want %v in UTC", tc.in, got, got.Location(), tc.want)
			}
		})
	}
}

func TestParseTimeRejects(t *testing.T) {
	for _, in := range []string{
		"", "yesterday", "2023-02-30 10:00:00", "2023-03-07 06:12:56 PST", "2023-03-07T06:12:56 UTC",
		"1234567890123456", "-1676625938460", "0000-01-01T00:00:00Z", "2023-03-07 06:12:56 UTC ",
		"2023-03-07", "0001-01-01T00:30:00+01:00",
	} {
		if got, err := ParseTime(in); err == nil {
			t.Errorf("ParseTime(%q) = %v, want an error", in, got)
		}
	}
}

func TestFormatQueryTime(t *testing.T) {
	in := time.Date(2022, 7, 19, 6, 32, 56, 999e6, time.FixedZone("X", -7*3600))
	if got, want := FormatQueryTime(in), "2022-07-19T13:32:56+0000"; got != want {
		t.Fatalf("FormatQueryTime = %q, want %q", got, want)
	}
	if got, want := FormatWindowTime(in), "2022-07-19 13:32:56 UTC"; got != want {
		t.Fatalf("FormatWindowTime = %q, want %q", got, want)
	}
}

func TestAPITimeInJSON(t *testing.T) {
	var v struct {
		A, B, C apiTime
	}
	if err := json.Unmarshal([]byte(`{"A": 1676625938460, "B": null, "C": ""}`), &v); err != nil {
		t.Fatal(err)
	}
	if got := time.Time(v.A); got.UnixMilli() != 1676625938460 {
		t.Fatalf("number: got %v", got)
	}
	if !time.Time(v.B).IsZero() || !time.Time(v.C).IsZero() {
		t.Fatalf("null and empty must be zero: %v %v", time.Time(v.B), time.Time(v.C))
	}
	for _, bad := range []string{`{"A": 1.5}`, `{"A": -3}`, `{"A": true}`, `{"A": "soon"}`, `{"A": 1e12}`} {
		if err := json.Unmarshal([]byte(bad), &v); err == nil {
			t.Errorf("%s: want an error", bad)
		}
	}
}

// FuzzParseTime: never panics; whatever parses is UTC, in range, and
// survives the query and window forms to the second.
func FuzzParseTime(f *testing.F) {
	for _, s := range []string{
		"2023-02-24 20:29:40.331", "2023-03-09T02:43:30.243-08:00", "2023-03-03T20:22:39.096Z",
		"2023-03-07 06:12:56 UTC", "1676625938460", "2022-07-19T13:32:56+0000", "0", "999999999999999",
		"9999-12-31T23:59:59.999999999-23:59", "0001-01-01 00:00:00 UTC", "2023-02-24 20:29:40,331",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseTime(s)
		if err != nil {
			return
		}
		if got.Location() != time.UTC {
			t.Fatalf("ParseTime(%q) not UTC: %v", s, got.Location())
		}
		if got.Year() < 1 || got.Year() > 9999 {
			t.Fatalf("ParseTime(%q) out of range: %v", s, got)
		}
		want := got.Truncate(time.Second)
		for _, form := range []string{FormatQueryTime(got), FormatWindowTime(got)} {
			back, err := ParseTime(form)
			if err != nil {
				t.Fatalf("ParseTime(%q) = %v, but its formatted %q does not parse: %v", s, got, form, err)
			}
			if !back.Equal(want) {
				t.Fatalf("round trip of %q via %q: got %v want %v", s, form, back, want)
			}
		}
	})
}
