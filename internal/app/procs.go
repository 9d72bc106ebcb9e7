package app

import (
	"os"
	"runtime"
)

// TuneProcs gives the Go scheduler one P more than the CPUs it found,
// unless GOMAXPROCS is set in the environment, and returns the value in
// use. The journal's and bbolt's fdatasyncs block in the kernel while
// holding a P until the runtime's monitor takes it back (two of its ticks,
// tens to hundreds of microseconds), and the webhooks they wake are queued
// on that P meanwhile; on 2 CPUs that idles a quarter of the machine under
// load. With the extra P, `go run ./bench/ingest` measured 15-20% more
// relay throughput and no change for the bare server (BENCHMARKS.md).
func TuneProcs() int {
	if _, set := os.LookupEnv("GOMAXPROCS"); set {
		return runtime.GOMAXPROCS(0)
	}
	n := runtime.GOMAXPROCS(0) + 1
	runtime.GOMAXPROCS(n)
	return n
}
