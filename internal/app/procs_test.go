package app

import (
	"os"
	"runtime"
	"runtime/debug"
	"testing"
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
