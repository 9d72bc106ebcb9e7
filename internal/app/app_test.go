package app

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/config"
	"github.com/cakework-relay/cakework-relay/internal/state"
)

func testConfig(t *testing.T) *config.Config {
	t.Helper()
	cfg := config.Default(func(string) (string, bool) { return "", false })
	cfg.DataDir = t.TempDir()
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.Bus.Embedded.Listen = "127.0.0.1:0"
	cfg.HTTP.AdminToken = "admintoken"
	return cfg
}

func TestStartReadyStop(t *testing.T) {
	cfg := testConfig(t)
	a, err := New(Options{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	base := "http://" + a.HTTPAddr()
	for _, path := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d", path, resp.StatusCode)
		}
	}
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	var sb strings.Builder
	buf := make([]byte, 1<<16)
	for {
		n, err := resp.Body.Read(buf)
		sb.Write(buf[:n])
		if err != nil {
			break
		}
	}
	resp.Body.Close()
	for _, name := range []string{"relay_outbox_depth", "relay_bus_embedded_restarts_total 0"} {
		if !strings.Contains(sb.String(), name) {
			t.Fatalf("/metrics has no %s", name)
		}
	}
	req, _ := http.NewRequest("GET", base+"/v1/status", nil)
	req.Header.Set("Authorization", "Bearer admintoken")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var st map[string]any
	json.NewDecoder(resp.Body).Decode(&st)
	resp.Body.Close()
	if resp.StatusCode != 200 || st["outbox"] == nil {
		t.Fatalf("status %d %v", resp.StatusCode, st)
	}
	// Profiling is there, behind the admin token.
	preq, _ := http.NewRequest("GET", base+"/v1/debug/pprof/heap?debug=1", nil)
	preq.Header.Set("Authorization", "Bearer admintoken")
	presp, err := http.DefaultClient.Do(preq)
	if err != nil {
		t.Fatal(err)
	}
	pbody, _ := io.ReadAll(presp.Body)
	presp.Body.Close()
	if presp.StatusCode != 200 || !strings.Contains(string(pbody), "heap profile") {
		t.Fatalf("pprof heap: %d %.80s", presp.StatusCode, pbody)
	}
	req.Header.Set("Authorization", "Bearer wrong")
	resp, _ = http.DefaultClient.Do(req)
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("wrong admin token: %d", resp.StatusCode)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.Stop(ctx); err != nil {
		t.Fatal("second stop:", err)
	}
	// Everything was released: the same data dir opens again.
	b, _ := New(Options{Config: cfg})
	if err := b.Start(context.Background()); err != nil {
		t.Fatal("restart on the same data dir:", err)
	}
	b.Stop(ctx)
}

func TestStartFailuresLeaveNothingBehind(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()

	t.Run("http port in use", func(t *testing.T) {
		cfg := testConfig(t)
		cfg.HTTP.Listen = busy.Addr().String()
		a, _ := New(Options{Config: cfg})
		err := a.Start(context.Background())
		if err == nil || !strings.Contains(err.Error(), "http.listen") {
			t.Fatalf("got %v", err)
		}
		// The bbolt lock was released.
		cfg.HTTP.Listen = "127.0.0.1:0"
		b, _ := New(Options{Config: cfg})
		if err := b.Start(context.Background()); err != nil {
			t.Fatal("state left locked after failed start:", err)
		}
		b.Stop(context.Background())
	})
	t.Run("nats port in use", func(t *testing.T) {
		cfg := testConfig(t)
		cfg.Bus.Embedded.Listen = busy.Addr().String()
		a, _ := New(Options{Config: cfg})
		err := a.Start(context.Background())
		if err == nil || !strings.Contains(err.Error(), "bus.embedded.listen") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("data dir not writable", func(t *testing.T) {
		if os.Geteuid() == 0 {
			// root ignores permissions; a file where the dir should be fails for everyone.
		}
		cfg := testConfig(t)
		f := filepath.Join(t.TempDir(), "file")
		os.WriteFile(f, nil, 0o600)
		cfg.DataDir = filepath.Join(f, "sub")
		a, _ := New(Options{Config: cfg})
		err := a.Start(context.Background())
		if err == nil || !strings.Contains(err.Error(), "data_dir") {
			t.Fatalf("got %v", err)
		}
	})
}

// The embedded bus's files are synced before acknowledged events leave
// the journal (bus/sync.go); the wiring is the app's.
func TestAcknowledgedEventsLeaveAfterTheBusSynced(t *testing.T) {
	a := startApp(t, Options{Config: testConfig(t)})
	ctx := context.Background()
	st := a.Core().Store
	if err := st.Accept(ctx, func(tx *state.AcceptTx) error {
		return tx.Enqueue("cakework.build.b1.succeeded", "evt-b1", []byte(`{}`))
	}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for st.OutboxDepth() > 0 || st.Stats().BusSyncs == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("after 5s: outbox depth %d, bus syncs %d, errors %d", st.OutboxDepth(), st.Stats().BusSyncs, st.Stats().BusSyncErrors)
		}
		if err := st.Checkpoint(ctx); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := st.Stats().BusSyncErrors; n != 0 {
		t.Fatalf("%d bus sync errors", n)
	}
}

// startApp starts an app, stopped at the end of the test (within 2s: an
// outbox that cannot drain does not hold it up).
func startApp(t *testing.T, o Options) *App {
	t.Helper()
	a, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		a.Stop(ctx)
	})
	return a
}
