//go:build !linux

package bus

import "os"

func fdatasync(f *os.File) error { return f.Sync() }

// filesystemSize is 0 (unknown) here: nats-server sizes its limit itself.
func filesystemSize(string) int64 { return 0 }

// freeSpace is -1 (unknown) here.
func freeSpace(string) int64 { return -1 }
