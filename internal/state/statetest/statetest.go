// Package statetest holds test helpers for the relay's data dir.
package statetest

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// CrashCopy copies the data dir of a relay that is still running into a
// new temporary directory and returns it: what was written to its files
// is there, nothing a clean stop would add. Files that vanish during the
// copy (a spare being renamed, a segment released) are skipped.
func CrashCopy(t testing.TB, src string) string {
	t.Helper()
	dst := t.TempDir()
	CopyDir(t, src, dst)
	return dst
}

// CopyDir copies the tree at src into dst as CrashCopy does.
func CopyDir(t testing.TB, src, dst string) {
	t.Helper()
	err := filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if fi.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o750)
		}
		in, err := os.Open(p)
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		defer in.Close()
		// Modes kept, as cp -a does: secrets in data_dir are 0600.
		out, err := os.OpenFile(filepath.Join(dst, rel), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, fi.Mode().Perm())
		if err != nil {
			return err
		}
		defer out.Close()
		_, err = io.Copy(out, in)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}
