package app

import (
	"log/slog"
	"math"
	"os"
	"runtime"
	"runtime/debug"

	"github.com/KimMachineGun/automemlimit/memlimit"
)

// GCPercent is the garbage collector's target that TuneRuntime sets when
// GOGC is not in the environment.
const GCPercent = 200

// TuneRuntime sets the scheduler and the garbage collector for the relay's
// load, unless the environment chose (GOMAXPROCS, GOGC), and returns the
// values in use.
//
// Procs: one P more than the CPUs found. The journal's and bbolt's
// fdatasyncs block in the kernel while holding a P until the runtime's
// monitor takes it back (two of its ticks, tens to hundreds of
// microseconds), and the webhooks they wake are queued on that P meanwhile;
// on 2 CPUs that idles a quarter of the machine under load. With the extra
// P, `go run ./bench/ingest` measured 15-20% more relay throughput and no
// change for the bare server.
//
// GC: GOGC 200 instead of 100, so a collection runs half as often, at up to
// three times the live heap instead of twice. Under the ingest benchmark's
// load the relay's live heap is under 100 MB; the assists of the frequent
// collections were most of its p99 (about 21 ms at GOGC 100, 16 ms at 200,
// 12.5 ms at 400, with 2-5% more throughput; BENCHMARKS.md).
func TuneRuntime() (procs, gcPercent int) {
	procs = runtime.GOMAXPROCS(0)
	if _, set := os.LookupEnv("GOMAXPROCS"); !set {
		procs++
		runtime.GOMAXPROCS(procs)
	}
	if _, set := os.LookupEnv("GOGC"); set {
		gcPercent = debug.SetGCPercent(-1)
		debug.SetGCPercent(gcPercent)
	} else {
		gcPercent = GCPercent
		debug.SetGCPercent(gcPercent)
	}
	return procs, gcPercent
}

// MemoryLimitRatio is the share of the container's memory limit given to
// the Go runtime as its soft limit; the rest is room for what the Go
// runtime does not count (the embedded NATS server's and bbolt's mmaps,
// thread stacks).
const MemoryLimitRatio = 0.9

// SetMemoryLimit sets the Go memory limit from the cgroup's (provider:
// memlimit.FromCgroup) when GOMEMLIMIT is not in the environment, with
// github.com/KimMachineGun/automemlimit, and logs what was chosen. Near the
// limit the garbage collector runs harder instead of letting the heap grow
// past the container's limit (GOGC 200 alone lets it reach three times the
// live heap). It returns the limit in use (math.MaxInt64: none).
func SetMemoryLimit(log *slog.Logger, provider memlimit.Provider) int64 {
	if v := os.Getenv("GOMEMLIMIT"); v != "" {
		limit := debug.SetMemoryLimit(-1)
		log.Info("Go memory limit from GOMEMLIMIT", "GOMEMLIMIT", v, "bytes", limit)
		return limit
	}
	limit, err := memlimit.Set(memlimit.WithProvider(provider), memlimit.WithRatio(MemoryLimitRatio))
	switch {
	case err != nil:
		log.Info("no container memory limit found; the Go memory limit is off (set GOMEMLIMIT to choose one)", "err", err)
	case limit == math.MaxInt64:
		log.Info("the container has no memory limit; the Go memory limit is off (set GOMEMLIMIT to choose one)")
	default:
		log.Info("Go memory limit set from the container's memory limit (GOMEMLIMIT overrides it)",
			"bytes", limit, "mib", limit>>20, "ratio", MemoryLimitRatio)
	}
	return limit
}
