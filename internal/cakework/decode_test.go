package cakework

import (
	"encoding/json"
	"errors"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestDecodeVMBothVolumeSpellingsAndNormalizedShape(t *testing.T) {
	for _, body := range []string{
		`{"id":"e784996f346483","hostname":"h.fly.dev","cpu":1,"memory":256,"imageId":"IMG","state":"started","port":8080,"volumeGB":3,"createdAt":"2023-03-09T02:43:30.243-08:00","updatedAt":"2023-02-24 20:29:40.331"}`,
		`{"id":"e784996f346483","hostname":"h.fly.dev","cpu":1,"memory":256,"imageId":"IMG","state":"started","port":8080,"volumeGb":3,"createdAt":"2023-03-09T10:43:30.243Z","updatedAt":1677270580331}`,
	} {
		vm, err := DecodeVM([]byte(body))
		if err != nil {
			t.Fatalf("DecodeVM(%s): %v", body, err)
		}
		out, err := json.Marshal(vm)
		if err != nil {
			t.Fatal(err)
		}
		want := `{"id":"e784996f346483","hostname":"h.fly.dev","cpu":1,"memory":256,"imageId":"IMG","state":"started","port":8080,"volumeGB":3,"createdAt":"2023-03-09T10:43:30.243Z","updatedAt":"2023-02-24T20:29:40.331Z"}`
		if string(out) != want {
			t.Fatalf("normalized VM\n got %s\nwant %s", out, want)
		}
	}
}

func TestDecodeBuildNormalizedShape(t *testing.T) {
	b, err := DecodeBuild([]byte(`{"buildId":"af3e","status":"created","createdAt":"2023-02-24 20:29:40.331","updatedAt":"2023-02-24 20:29:40.331"}`))
	if err != nil {
		t.Fatal(err)
	}
	out, _ := json.Marshal(b)
	if want := `{"buildId":"af3e","status":"created","createdAt":"2023-02-24T20:29:40.331Z","updatedAt":"2023-02-24T20:29:40.331Z"}`; string(out) != want {
		t.Fatalf("got %s want %s", out, want)
	}
}

func TestDecodersRejectPartialAnswers(t *testing.T) {
	tests := []struct {
		name string
		dec  func([]byte) (any, error)
		body string
	}{
		{"vm truncated", anyDec(DecodeVM), `{"id":"a","cpu":1,"mem`},
		{"vm without id", anyDec(DecodeVM), `{"cpu":1}`},
		{"vm bad time", anyDec(DecodeVM), `{"id":"a","createdAt":"tomorrow"}`},
		{"vm html", anyDec(DecodeVM), `<html>oops</html>`},
		{"vm trailing garbage", anyDec(DecodeVM), `{"id":"a"} {"id":"b"}`},
		{"build without id", anyDec(DecodeBuild), `{"status":"created"}`},
		{"list without vms", anyDec(DecodeVMList), `{"pagination":"x"}`},
		{"list with a bad vm", anyDec(DecodeVMList), `{"vms":[{"id":"a"},{"cpu":2}]}`},
		{"list truncated", anyDec(DecodeVMList), `{"vms":[{"id":"a"},{"id":"b"`},
		{"log line without timestamp", anyDec(DecodeLogPage), `{"lines":[{"level":"info","message":"x"}]}`},
		{"log truncated", anyDec(DecodeLogPage), `{"lines":[{"timestamp":1,"level":"info","message":"x"}],"pagina`},
		{"log lines not a list", anyDec(DecodeLogPage), `{"lines":{}}`},
		{"empty", anyDec(DecodeLogPage), ``},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v, err := tc.dec([]byte(tc.body))
			if err == nil {
				t.Fatalf("decoded %+v, want an error", v)
			}
			if !reflect.ValueOf(v).IsZero() {
				t.Fatalf("error %v came with a non-zero value %+v", err, v)
			}
		})
	}
}

func anyDec[T any](f func([]byte) (T, error)) func([]byte) (any, error) {
	return func(b []byte) (any, error) { return f(b) }
}

func TestDecodeLogPage(t *testing.T) {
	p, err := DecodeLogPage([]byte(`{"lines":[{"timestamp":1676625938460,"level":"info","message":"a"},{"timestamp":"2023-03-03T20:22:39.096Z","level":"error","message":"b"}],"pagination":"XlG9SZP","from":"2023-03-07 06:12:56 UTC","to":"2023-03-08 06:11:56 UTC"}`))
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Lines) != 2 || p.Lines[0].Timestamp != 1676625938460 || p.Lines[1].Time() != time.Date(2023, 3, 3, 20, 22, 39, 96e6, time.UTC) {
		t.Fatalf("lines: %+v", p.Lines)
	}
	if p.Pagination != "XlG9SZP" || p.From != "2023-03-07 06:12:56 UTC" || p.To != "2023-03-08 06:11:56 UTC" {
		t.Fatalf("cursor: %+v", p)
	}
	empty, err := DecodeLogPage([]byte(`{}`))
	if err != nil || empty.Lines == nil || len(empty.Lines) != 0 {
		t.Fatalf("empty page: %+v, %v", empty, err)
	}
}

func TestErrorMessageShapes(t *testing.T) {
	tests := []struct{ body, want string }{
		{`{"error":"vm not found"}`, "vm not found"},
		{`{"message":"build not found"}`, "build not found"},
		{`"VM is already stopped"`, "VM is already stopped"},
		{``, ""},
		{`   `, ""},
		{`{"error":{"message":"nested"}}`, "nested"},
		{`{"error":42}`, "42"},
		{`{"other":"x"}`, `{"other":"x"}`},
		{`<html>bad gateway</html>`, "<html>bad gateway</html>"},
		{"line1\nline2\x00", "line1 line2"},
		{`null`, ""},
		{strings.Repeat("x", 2000), strings.Repeat("x", maxMessage) + "…"},
	}
	for _, tc := range tests {
		if got := errorMessage([]byte(tc.body)); got != tc.want {
			t.Errorf("errorMessage(%.40q) = %.60q, want %.60q", tc.body, got, tc.want)
		}
	}
}

func TestRetryAfterHeader(t *testing.T) {
	now := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"", 0}, {"3", 3 * time.Second}, {"0", 0}, {"-5", 0}, {"soon", 0},
		{"999999999", MaxRetryAfter},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0},
	}
	for _, tc := range tests {
		if got := parseRetryAfter(tc.in, now); got != tc.want {
			t.Errorf("parseRetryAfter(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestClassifiers(t *testing.T) {
	e := func(op string, status int) error { return &APIError{Status: status, Op: op, Method: "GET", Path: "/x"} }
	wrapped := func(err error) error { return errors.Join(errors.New("context"), err) }
	tests := []struct {
		name                                           string
		err                                            error
		notFound, conflict, stopped, unauth, retryable bool
	}{
		{"404", e(opGetVM, 404), true, false, false, false, false},
		{"409 stop", wrapped(e(opStopVM, 409)), false, true, true, false, false},
		{"409 stop cached", e(opStopCachedVM, 409), false, true, true, false, false},
		{"409 elsewhere", e(opCacheVM, 409), false, true, false, false, false},
		{"401", e(opListVMs, 401), false, false, false, true, false},
		{"400", e(opStartVM, 400), false, false, false, false, false},
		{"429", e(opListVMs, 429), false, false, false, false, true},
		{"500", e(opListVMs, 500), false, false, false, false, true},
		{"503", e(opListVMs, 503), false, false, false, false, true},
		{"malformed", wrapped(ErrMalformedResponse), false, false, false, false, true},
		{"transport", &TransportError{Op: "x", Err: errors.New("connection refused")}, false, false, false, false, true},
		{"nil", nil, false, false, false, false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := [5]bool{IsNotFound(tc.err), IsConflict(tc.err), IsAlreadyStopped(tc.err), IsUnauthorized(tc.err), IsRetryable(tc.err)}
			want := [5]bool{tc.notFound, tc.conflict, tc.stopped, tc.unauth, tc.retryable}
			if got != want {
				t.Fatalf("notFound/conflict/stopped/unauth/retryable = %v, want %v", got, want)
			}
		})
	}
}

// Fuzz targets for the response decoders: no panic, and an error always
// comes with the zero value (no half-filled struct).

func FuzzDecodeVM(f *testing.F) {
	f.Add([]byte(`{"id":"e7","hostname":"h","cpu":1,"memory":256,"imageId":"I","state":"started","port":8080,"volumeGb":1,"createdAt":"2023-03-09T02:43:30.243-08:00","updatedAt":"2023-02-24 20:29:40.331"}`))
	f.Add([]byte(`{"id":"e7","volumeGB":1,"createdAt":1676625938460}`))
	f.Add([]byte(`{"id":"e7","createdAt":"2023-03-07 06:12:56 UTC"`))
	f.Add([]byte(`"oops"`))
	f.Fuzz(func(t *testing.T, data []byte) {
		checkDecoder(t, data, DecodeVM)
		checkDecoder(t, data, DecodeBuild)
	})
}

func FuzzDecodeVMList(f *testing.F) {
	f.Add([]byte(`{"vms":[{"id":"148e","state":"stopped","createdAt":"2023-03-03T20:22:39.096Z"}],"pagination":"p"}`))
	f.Add([]byte(`{"vms":[]}`))
	f.Add([]byte(`{"vms":null}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		l := checkDecoder(t, data, DecodeVMList)
		for _, vm := range l.VMs {
			if vm.ID == "" {
				t.Fatalf("list holds a VM without id: %s", data)
			}
		}
	})
}

func FuzzDecodeLogPage(f *testing.F) {
	f.Add([]byte(`{"lines":[{"timestamp":1676625938460,"level":"info","message":"m"}],"pagination":"XlG9SZP","from":"2023-03-07 06:12:56 UTC","to":"2023-03-08 06:11:56 UTC"}`))
	f.Add([]byte(`{"lines":[{"timestamp":"2023-03-03T20:22:39.096Z"}]}`))
	f.Add([]byte(`{"lines":[{"timestamp":1676625938460,"level":"info","message":"m"}],"pagi`))
	f.Fuzz(func(t *testing.T, data []byte) {
		p := checkDecoder(t, data, DecodeLogPage)
		for _, l := range p.Lines {
			if l.Timestamp == 0 {
				t.Fatalf("line without timestamp accepted: %s", data)
			}
		}
	})
}

func FuzzErrorMessage(f *testing.F) {
	for _, s := range []string{`{"error":"x"}`, `{"message":"y"}`, `"z"`, ``, `{"error":{"error":{"error":1}}}`, "\xff\xfe"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		msg := errorMessage(data)
		if len(msg) > maxMessage+len("…") {
			t.Fatalf("message too long: %d", len(msg))
		}
		if strings.ContainsAny(msg, "\n\r") {
			t.Fatalf("message has a line break: %q", msg)
		}
	})
}

func checkDecoder[T any](t *testing.T, data []byte, dec func([]byte) (T, error)) T {
	t.Helper()
	v, err := dec(data)
	if err != nil && !reflect.ValueOf(&v).Elem().IsZero() {
		t.Fatalf("error %v with non-zero value %+v", err, v)
	}
	return v
}
