package slack

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	goslack "github.com/slack-go/slack"

	"github.com/cakework-relay/cakework-relay/internal/sinks/sinktest"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

// The golden files show what messages look like in Slack; the README
// quotes them. Regenerate with: go test ./internal/sinks/slack -run Golden -update
func TestGolden(t *testing.T) {
	f := newFakeSlack(t, nil)
	s := newSender(t, Config{Name: "hook", WebhookURL: f.WebhookURL()}, openStore(t, t.TempDir()), sinktest.NewStepClock(t0.Add(time.Hour)), nil)

	failedAt := t0.Add(3*time.Minute + 12*time.Second)
	created := buildEvent(t, "bld-7f3a9c", "created", t0, map[string]any{"previousStatus": ""})
	failed := buildEvent(t, "bld-7f3a9c", "failed", failedAt, map[string]any{"previousStatus": "created"})
	var ring logRing
	lines := []string{
		"Step 1/9 : FROM python:3.12-slim", "---> 2f1e0c3b9d7a", "Step 2/9 : WORKDIR /app", "---> Using cache",
		"Step 3/9 : COPY requirements.txt .", "Step 4/9 : RUN pip install -r requirements.txt",
		"Collecting fastapi==0.115.0", "Collecting uvicorn[standard]==0.30.6", "Collecting numpy==2.1.1",
		"Downloading numpy-2.1.1.tar.gz (18.9 MB)", "Installing build dependencies: started",
		"Installing build dependencies: finished with status 'done'", "Preparing metadata (pyproject.toml): started",
		"error: subprocess-exited-with-error", "× Preparing metadata (pyproject.toml) did not run successfully.",
		"│ exit code: 1", "╰─> [12 lines of output]", "ERROR: Unknown compiler(s): [['cc'], ['gcc'], ['clang']]",
		"note: This error originates from a subprocess, and is likely not a problem with pip.",
		"error: metadata-generation-failed", "The command '/bin/sh -c pip install -r requirements.txt' returned a non-zero code: 1",
		"build failed: step 4/9 exited with 1",
	}
	for i, l := range lines {
		ring.add(fmt.Sprint("e", i), []string{failedAt.Add(time.Duration(i-len(lines))*time.Second).Format("15:04:05") + " " + l}, t0)
	}
	var rec parentRec
	prepare(&rec, logRing{}, created, parseData(created))
	prepare(&rec, ring, failed, parseData(failed))
	golden(t, "build_failed", s.eventMessage(failed, parseData(failed), rec))
	golden(t, "build_failed_parent", s.cardMessage(rec))

	vm := parentRec{}
	started := vmEvent(t, "vm-3kq9", "started", t0)
	prepare(&vm, logRing{}, started, parseData(started))
	idle := mkEvent(t, "vm", "vm-3kq9", "idle", t0.Add(55*time.Minute), map[string]any{
		"idleSince": t0.Add(30 * time.Minute).Format(time.RFC3339), "stopAt": t0.Add(60 * time.Minute).Format(time.RFC3339),
		"idleFor": "25m", "dryRun": false,
	})
	prepare(&vm, logRing{}, idle, parseData(idle))
	golden(t, "vm_idle", s.eventMessage(idle, parseData(idle), vm))
	stopped := mkEvent(t, "vm", "vm-3kq9", "autostopped", t0.Add(60*time.Minute), map[string]any{
		"idleSince": t0.Add(30 * time.Minute).Format(time.RFC3339), "idleFor": "30m", "dryRun": false,
	})
	prepare(&vm, logRing{}, stopped, parseData(stopped))
	golden(t, "vm_autostopped", s.eventMessage(stopped, parseData(stopped), vm))

	p := pending{Type: "vm.started", Count: 45}
	for i := range 45 {
		p.Items = append(p.Items, pendingItem{Subject: fmt.Sprintf("vm-%02d", i+5), Action: "started", Time: t0.Add(time.Duration(i) * 100 * time.Millisecond), Detail: "img-42"})
	}
	golden(t, "flood_summary", summaryMessage(p, 5, 10*time.Second))
}

func golden(t *testing.T, name string, m message) {
	t.Helper()
	js, err := blocksJSON(m)
	if err != nil {
		t.Fatal(err)
	}
	got := "# text (the plain-text fallback, as sent)\n" + m.Text + "\n\n# blocks (Block Kit JSON)\n" + string(js) + "\n"
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if string(want) != got {
		t.Errorf("%s differs from the golden file (run with -update if the change is intended):\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

// blocksJSON is the blocks as Slack receives them (for golden files).
func blocksJSON(m message) ([]byte, error) {
	return json.MarshalIndent(goslack.Blocks{BlockSet: m.Blocks}, "", "  ")
}
