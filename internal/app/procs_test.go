package app

import (
	"log/slog"
	"math"
	"os"
	"runtime"
	"runtime/debug"
	"testing"

	"github.com/KimMachineGun/automemlimit/memlimit"

	"github.com/cakework-relay/cakework-relay/internal/logtest"
)

// unsetenv removes key for the test and puts it back afterwards.
func unsetenv(t *testing.T, key string) {
	t.Helper()
	t.Setenv(key, "") // registers the restore
	os.Unsetenv(key)
}

func TestTuneRuntime(t *testing.T) {
	procs0 := runtime.GOMAXPROCS(0)
	gc0 := debug.SetGCPercent(100)
	t.Cleanup(func() {
		runtime.GOMAXPROCS(procs0)
		debug.SetGCPercent(gc0)
	})

	unsetenv(t, "GOMAXPROCS")
	unsetenv(t, "GOGC")
	procs, gc := TuneRuntime()
	if procs != procs0+1 || runtime.GOMAXPROCS(0) != procs0+1 {
		t.Fatalf("GOMAXPROCS %d (returned %d), want %d", runtime.GOMAXPROCS(0), procs, procs0+1)
	}
	if gc != GCPercent || debug.SetGCPercent(gc) != GCPercent {
		t.Fatalf("GC percent returned %d, want %d", gc, GCPercent)
	}

	// What the environment chose stays (the runtime read it at start).
	runtime.GOMAXPROCS(procs0)
	debug.SetGCPercent(150)
	t.Setenv("GOMAXPROCS", "1")
	t.Setenv("GOGC", "150")
	procs, gc = TuneRuntime()
	if procs != procs0 || runtime.GOMAXPROCS(0) != procs0 {
		t.Fatalf("GOMAXPROCS from the environment changed to %d (returned %d)", runtime.GOMAXPROCS(0), procs)
	}
	if gc != 150 || debug.SetGCPercent(gc) != 150 {
		t.Fatalf("GOGC from the environment changed (returned %d)", gc)
	}
}

func TestGoMemoryLimit(t *testing.T) {
	for _, c := range []struct{ container, want uint64 }{
		{256 << 20, 192 << 20},  // the reserve
		{1000 << 20, 900 << 20}, // 10%
		{100 << 20, 50 << 20},   // never under half
		{640 << 20, 576 << 20},  // both: 10% is the reserve
	} {
		if got := goMemoryLimit(c.container); got != c.want {
			t.Errorf("container %d MiB: Go limit %d MiB, want %d MiB", c.container>>20, got>>20, c.want>>20)
		}
	}
}

func TestSetMemoryLimit(t *testing.T) {
	old := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(old) })
	unsetenv(t, "AUTOMEMLIMIT")

	unsetenv(t, "GOMEMLIMIT")
	log, rec := logtest.New()
	got := SetMemoryLimit(log, func() (uint64, error) { return 256 << 20, nil })
	// 256 MiB: the reserve (64 MiB) is more than 10%.
	want := int64(192 << 20)
	if got != want || debug.SetMemoryLimit(-1) != want {
		t.Fatalf("limit %d (runtime %d), want %d from a 256 MiB cgroup", got, debug.SetMemoryLimit(-1), want)
	}
	if l := rec.Find(slog.LevelInfo, "Go memory limit set from the container's memory limit"); len(l) != 1 || l[0].Attrs["mib"] != "192" || l[0].Attrs["container_mib"] != "256" {
		t.Fatalf("what was chosen is not logged:\n%s", rec)
	}

	// No limit in the cgroup: off, and said.
	log, rec = logtest.New()
	if got := SetMemoryLimit(log, func() (uint64, error) { return 0, memlimit.ErrNoLimit }); got != math.MaxInt64 {
		t.Fatalf("limit %d with no cgroup limit", got)
	}
	if len(rec.Find(slog.LevelInfo, "the container has no memory limit")) != 1 {
		t.Fatalf("not logged:\n%s", rec)
	}

	// GOMEMLIMIT wins.
	debug.SetMemoryLimit(100 << 20)
	t.Setenv("GOMEMLIMIT", "100MiB")
	log, rec = logtest.New()
	if got := SetMemoryLimit(log, func() (uint64, error) { return 256 << 20, nil }); got != 100<<20 {
		t.Fatalf("limit %d, want GOMEMLIMIT's", got)
	}
	if len(rec.Find(slog.LevelInfo, "Go memory limit from GOMEMLIMIT")) != 1 {
		t.Fatalf("not logged:\n%s", rec)
	}
}
