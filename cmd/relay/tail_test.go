package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// A webhook into a running relay comes out of `relay tail`, as a console
// line and as CloudEvents JSON.
func TestTailPrintsEventsFromTheBus(t *testing.T) {
	dir := t.TempDir()
	addrs := freeAddrs(t, 2)
	httpAddr, natsAddr := addrs[0], addrs[1]
	cfg := filepath.Join(dir, "c.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`data_dir: %s
http: {listen: %q}
bus: {embedded: {listen: %q}}
ingest:
  cakework: {token: tailtest}
`, filepath.Join(dir, "data"), httpAddr, natsAddr)), 0o600)
	var serveErr bytes.Buffer
	serve := exec.Command(relayBin, "serve", "-config", cfg)
	serve.Stderr = &serveErr
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { serve.Process.Kill(); serve.Wait() }()
	waitReady(t, "http://"+httpAddr+"/readyz")

	resp, err := http.Post("http://"+httpAddr+"/webhooks/cakework/build/succeeded?token=tailtest", "application/json",
		strings.NewReader(`{"buildId":"b-tail-1","imageId":"img-9"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("webhook: %d\n%s", resp.StatusCode, serveErr.String())
	}

	// The relay generated the subscriber token: -config finds it (and the
	// bus address); -token takes it as printed in the README.
	tokBytes, err := os.ReadFile(filepath.Join(dir, "data", "nats-token"))
	if err != nil {
		t.Fatal("no generated subscriber token:", err)
	}
	if fi, _ := os.Stat(filepath.Join(dir, "data", "nats-token")); fi.Mode().Perm() != 0o600 {
		t.Errorf("nats-token has mode %v, want 0600", fi.Mode().Perm())
	}
	tok := strings.TrimSpace(string(tokBytes))
	for _, tc := range []struct {
		args []string
		want func(string) bool
	}{
		{[]string{"-config", cfg, "-since", "1m"}, func(out string) bool {
			return strings.Contains(out, "build.succeeded") && strings.Contains(out, "b-tail-1") && strings.Contains(out, "image img-9")
		}},
		{[]string{"-server", "nats://" + natsAddr, "-token", tok, "-since", "1m", "-json", "-subject", "cakework.build.>"}, func(out string) bool {
			line, _, _ := strings.Cut(out, "\n")
			var ev map[string]any
			return json.Unmarshal([]byte(line), &ev) == nil && ev["type"] == "com.cakework.build.succeeded" && ev["subject"] == "b-tail-1"
		}},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		var out, errb syncBuffer
		tail := exec.CommandContext(ctx, relayBin, append([]string{"tail"}, tc.args...)...)
		tail.Stdout, tail.Stderr = &out, &errb
		if err := tail.Start(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(8 * time.Second)
		for !tc.want(out.String()) && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		ok := tc.want(out.String())
		cancel()
		tail.Wait()
		if !ok {
			t.Errorf("relay tail %v printed:\n%s\nstderr:\n%s", tc.args, out.String(), errb.String())
		}
	}
	// Without the token: refused, and told what to pass.
	var errb bytes.Buffer
	anon := exec.Command(relayBin, "tail", "-server", "nats://"+natsAddr)
	anon.Dir, anon.Stderr = t.TempDir(), &errb
	if err := anon.Run(); err == nil || !strings.Contains(errb.String(), "subscriber token") {
		t.Errorf("relay tail without a token: %v\n%s", err, errb.String())
	}
}

// syncBuffer is a bytes.Buffer safe to read while a process writes it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
