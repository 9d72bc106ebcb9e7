//go:build !linux

package bus

import "os"

func fdatasync(f *os.File) error { return f.Sync() }
