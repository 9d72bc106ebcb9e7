package journal

import (
	"os"
	"syscall"
)

// datasync is fdatasync: the data and the size, not the timestamps.
func datasync(f *os.File) error { return syscall.Fdatasync(int(f.Fd())) }

// preallocate reserves size bytes for f. Not every file system can; writes
// then extend the file, which is correct but syncs slower.
func preallocate(f *os.File, size int64) { _ = syscall.Fallocate(int(f.Fd()), 0, 0, size) }
