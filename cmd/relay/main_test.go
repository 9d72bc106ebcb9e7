package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/reliability"
)

var relayBin string

// TestMain builds the real binary once: these tests run it as users do,
// and send it real signals.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "relay-bin")
	if err != nil {
		panic(err)
	}
	relayBin, err = reliability.Build(dir, reliability.RelayPkg, "relay")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// freeAddrs returns n distinct free loopback addresses.
func freeAddrs(t *testing.T, n int) []string {
	t.Helper()
	a, err := reliability.FreeAddrs(n)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestCheckConfigNamesEveryBadKey(t *testing.T) {
	f := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(f, []byte("http:\n  listen: 127.0.0.1:8080\n  lisen: x\nsinks:\n  http:\n    - name: app\n      url: not-a-url\n"), 0o600)
	var stdout, stderr bytes.Buffer
	code := run([]string{"check-config", f}, &stdout, &stderr)
	if code != 1 {
		t.Fatalf("exit %d, want 1; stderr:\n%s", code, stderr.String())
	}
	for _, want := range []string{"http.lisen", "sinks.http[0].url"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("output does not name %s:\n%s", want, stdout.String())
		}
	}
	if code := run([]string{"check-config", filepath.Join(t.TempDir(), "missing.yaml")}, &stdout, &stderr); code != 1 {
		t.Fatalf("missing file: exit %d", code)
	}
	if code := run([]string{"check-config"}, &stdout, &stderr); code != 2 {
		t.Fatalf("no file argument: exit %d, want 2", code)
	}
}

func TestUsageExitCodes(t *testing.T) {
	var out, errb bytes.Buffer
	for _, tc := range []struct {
		args []string
		code int
	}{
		{nil, 2},
		{[]string{"nope"}, 2},
		{[]string{"-h"}, 0},
		{[]string{"serve", "-h"}, 0},
		{[]string{"serve", "-bogus"}, 2},
		{[]string{"check-config", "-h"}, 0},
		{[]string{"version"}, 0},
	} {
		if got := run(tc.args, &out, &errb); got != tc.code {
			t.Errorf("relay %v: exit %d, want %d", tc.args, got, tc.code)
		}
	}
}

func TestServeWithNoConfigStopsOnSignal(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			dir := t.TempDir()
			addrs := freeAddrs(t, 2)
			httpAddr := addrs[0]
			// No config file: the defaults, with the addresses moved off the
			// well-known ports so tests can run beside a real relay.
			cfg := filepath.Join(dir, "c.yaml")
			os.WriteFile(cfg, []byte(fmt.Sprintf("data_dir: %s\nhttp: {listen: %q}\nbus: {embedded: {listen: %q}}\n", filepath.Join(dir, "data"), httpAddr, addrs[1])), 0o600)
			var stderr bytes.Buffer
			cmd := exec.Command(relayBin, "serve", "-config", cfg)
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer cmd.Process.Kill()
			waitReady(t, "http://"+httpAddr+"/readyz")
			start := time.Now()
			cmd.Process.Signal(sig)
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("exit: %v\n%s", err, stderr.String())
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("still running 5s after %v\n%s", sig, stderr.String())
			}
			t.Logf("stopped in %v", time.Since(start))
		})
	}
}

func waitReady(t *testing.T, url string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s never answered 200", url)
}

// relay simulate refuses bad webhook flags with exit 2, saying what to fix,
// before it listens; -h documents -webhook-retry-for.
func TestSimulateWebhookFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-webhook-retry-for", "-1s"}, "-webhook-retry-for must not be negative"},
		{[]string{"-webhook-url", "127.0.0.1:8080/webhooks/cakework"}, "-webhook-url: webhook URL \"127.0.0.1:8080/webhooks/cakework\""},
	} {
		var out, errb bytes.Buffer
		if code := run(append([]string{"simulate", "-listen", "127.0.0.1:0"}, tc.args...), &out, &errb); code != 2 || !strings.Contains(errb.String(), tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", tc.args, code, errb.String(), tc.want)
		}
	}
	var out, errb bytes.Buffer
	if code := run([]string{"simulate", "-h"}, &out, &errb); code != 0 || !strings.Contains(errb.String(), "-webhook-retry-for duration") || !strings.Contains(errb.String(), "(default 30s)") {
		t.Errorf("simulate -h: exit %d\n%s", code, errb.String())
	}
}
