//go:build linux

package bus

import (
	"os"
	"path/filepath"
	"syscall"
)

func fdatasync(f *os.File) error { return syscall.Fdatasync(int(f.Fd())) }

// filesystemSize is the size of the filesystem holding dir (the nearest
// directory of it that exists), or 0 when it cannot be read.
func filesystemSize(dir string) int64 {
	for d := dir; ; d = filepath.Dir(d) {
		var st syscall.Statfs_t
		if err := syscall.Statfs(d, &st); err == nil {
			return int64(st.Blocks) * st.Bsize
		}
		if d == filepath.Dir(d) {
			return 0
		}
	}
}

// freeSpace is what an unprivileged process may still write on the
// filesystem holding dir, or -1 when it cannot be read.
func freeSpace(dir string) int64 {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return -1
	}
	return int64(st.Bavail) * st.Bsize
}
