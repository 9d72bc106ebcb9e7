package reliability

import (
	"context"
	"flag"
	"fmt"
	"os"
	"testing"
	"time"
)

var relayBin, natsBin string

// TestMain builds the relay and nats-server binaries once (not under
// -short, where every test that runs them is skipped): the tests run them
// as operators do, and kill them as crashes would.
func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "relay-reliability-bin")
	if err != nil {
		panic(err)
	}
	if relayBin, err = Build(dir, RelayPkg, "relay"); err == nil {
		natsBin, err = Build(dir, NATSPkg, "nats-server")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// long reports whether the long forms were asked for
// (RELAY_RELIABILITY_LONG=1); CI runs the short ones.
func long() bool { return os.Getenv("RELAY_RELIABILITY_LONG") != "" }

func TestCrashMatrix(t *testing.T) {
	if testing.Short() {
		t.Skip("runs and kills the real binary")
	}
	o := CrashOptions{
		RelayBin: relayBin, Dir: t.TempDir(),
		Iterations: 4, MinUp: 500 * time.Millisecond, MaxUp: 3 * time.Second,
		Rate: 300, VMs: 4, FailEvery: 5, Seed: uint64(time.Now().UnixNano()),
		Settle: 40 * time.Second, Logf: t.Logf,
	}
	if long() {
		o.Iterations = 40
	}
	// Enough webhooks to keep the load on through every iteration.
	o.Webhooks = int(o.Rate * float64(o.Iterations) * 2.75)
	t.Logf("seed %d", o.Seed)
	res, err := CrashMatrix(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Log(res)
	errorEach(t, res.Problems)
}

func TestExternalNATSOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the real binary and a nats-server for a minute")
	}
	o := OutageOptions{
		RelayBin: relayBin, NATSBin: natsBin, Dir: t.TempDir(),
		Before: 4 * time.Second, Outage: 30 * time.Second, After: 6 * time.Second,
		Rate: 200, OutboxLimit: 2000, VMs: 4, Logf: t.Logf,
	}
	res, err := NATSOutage(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Log(res)
	errorEach(t, res.Problems)
}

// TestSoakShort is the CI form of the soak (go run ./bench/reliability soak
// runs the 30-minute one): a minute of steady webhooks plus a simulator
// with VMs that log and change state, sampled every 10s.
func TestSoakShort(t *testing.T) {
	if testing.Short() {
		t.Skip("a minute of load on the real binary")
	}
	o := SoakOptions{
		RelayBin: relayBin, Dir: t.TempDir(), Duration: 60 * time.Second, Sample: 10 * time.Second,
		Rate: 500, Senders: 16, VMs: 1000, VMLogEvery: 20 * time.Second, Churn: 5,
		SeenTTL: 30 * time.Second, MaxAge: 2 * time.Minute, VMsEvery: "@every 5s", LogsEvery: "@every 5s",
		Callback: true, Out: &logWriter{t},
	}
	if long() {
		o.Duration, o.Sample, o.Rate, o.VMs = 30*time.Minute, time.Minute, 1000, 5000
	}
	res, err := Soak(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("sent %d, acked %d, non-2xx %d, errors %d", res.Sent, res.Acked, res.Non2xx, res.Errors)
	if res.Non2xx > 0 || res.Errors > 0 || res.Acked < res.Sent-int64(o.Senders) {
		t.Errorf("not every webhook was acknowledged: sent %d, acked %d, non-2xx %d, errors %d", res.Sent, res.Acked, res.Non2xx, res.Errors)
	}
	if len(res.Samples) < 3 {
		t.Fatalf("only %d samples", len(res.Samples))
	}
	first, last := res.Samples[0], res.Samples[len(res.Samples)-1]
	if last.Goroutines > 2*first.Goroutines+50 {
		t.Errorf("goroutines grew from %.0f to %.0f", first.Goroutines, last.Goroutines)
	}
	if last.RSS > 512<<20 {
		t.Errorf("relay RSS %d MB", last.RSS>>20)
	}
	if last.OutboxDepth > 5000 {
		t.Errorf("the outbox fell behind: depth %.0f", last.OutboxDepth)
	}
	errorEach(t, res.Problems())
	for _, s := range res.Samples {
		if s.P99 > 2*time.Second {
			t.Errorf("%s: ingest p99 %s", s.At, s.P99)
		}
	}
}

// errorEach reports each problem as an error of t.
func errorEach(t *testing.T, problems []string) {
	t.Helper()
	for _, p := range problems {
		t.Error(p)
	}
}

type logWriter struct{ t *testing.T }

func (w *logWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}
