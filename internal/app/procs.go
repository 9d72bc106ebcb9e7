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

// MemoryLimitRatio is the largest share of the container's memory limit
// given to the Go runtime as its soft limit; MemoryLimitReserve is the
// least left outside it. The rest is room for what the Go runtime does not
// count but the container is charged for or RSS shows: the relay binary's
// pages (its text is about 28 MB), bbolt's mmap of relay.db, thread stacks.
// After the 600k-build flood in a 256 MiB container that was 43 MB of file
// pages: with 90% (230 MiB) the peak RSS was 266-278 MB, with 195 MiB 243
// MB (BENCHMARKS.md, session 8).
const (
	MemoryLimitRatio   = 0.9
	MemoryLimitReserve = 64 << 20
)

// goMemoryLimit is the Go memory limit for a container limit of limit
// bytes: MemoryLimitRatio of it, or MemoryLimitReserve below it when that
// is less, but never under half of it (a container too small for the
// reserve still gets a limit that makes the collector work harder before
// the kernel kills it).
func goMemoryLimit(limit uint64) uint64 {
	l := min(uint64(float64(limit)*MemoryLimitRatio), limit-min(limit, MemoryLimitReserve))
	return max(l, limit/2)
}

// SetMemoryLimit sets the Go memory limit from the cgroup's (provider:
// memlimit.FromCgroup; goMemoryLimit of it) when GOMEMLIMIT is not in the
// environment, with
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
	var container uint64
	limit, err := memlimit.Set(memlimit.WithProvider(func() (uint64, error) {
		l, err := provider()
		container = l
		return goMemoryLimit(l), err
	}), memlimit.WithRatio(1))
	switch {
	case err != nil:
		log.Info("no container memory limit found; the Go memory limit is off (set GOMEMLIMIT to choose one)", "err", err)
	case limit == math.MaxInt64:
		log.Info("the container has no memory limit; the Go memory limit is off (set GOMEMLIMIT to choose one)")
	default:
		log.Info("Go memory limit set from the container's memory limit (GOMEMLIMIT overrides it)",
			"bytes", limit, "mib", limit>>20, "container_mib", container>>20)
	}
	return limit
}
