package console

import (
	"strings"
	"testing"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/event"
)

func TestLines(t *testing.T) {
	at := time.Date(2026, 11, 26, 9, 3, 4, 0, time.UTC)
	mk := func(kind, id, action string, data any) event.Event {
		e, err := event.New(kind, id, action, "x", at, data)
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	tests := []struct {
		e    event.Event
		want string
	}{
		{mk("build", "b1", "succeeded", map[string]any{"imageId": "img-9", "observedBy": "webhook"}), "image img-9 (webhook)"},
		{mk("build", "b1", "failed", map[string]any{}), "build failed"},
		{mk("vm", "v1", "started", map[string]any{"previousState": "created", "hostname": "h.fly.dev"}), "created → started on h.fly.dev"},
		{mk("vm", "v1", "suspended", map[string]any{}), "suspended"},
		{mk("vm", "v1", "log", map[string]any{"lines": []map[string]any{{"message": "a"}, {"message": "listening on :8080"}}}), "2 lines: listening on :8080"},
		{mk("vm", "v1", "autostopped", map[string]any{"idleSeconds": 120, "dryRun": true}), "stopped after 2m0s idle (dry run: not called)"},
		{mk("vm", "v1", "idle", map[string]any{"idleSince": at, "stopAt": at.Add(time.Minute)}), "idle since 09:03:04, stops at 09:04:04"},
	}
	for _, tt := range tests {
		got := Line(tt.e, false)
		if !strings.HasPrefix(got, "09:03:04  "+tt.e.ShortType()) || !strings.HasSuffix(got, tt.want) {
			t.Errorf("got %q, want suffix %q", got, tt.want)
		}
		if strings.Contains(got, "\x1b") {
			t.Errorf("color without a TTY: %q", got)
		}
	}
	if c := Line(tests[1].e, true); !strings.Contains(c, red) {
		t.Errorf("failed build not red: %q", c)
	}
}
