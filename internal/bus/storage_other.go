//go:build !linux

package bus

import "errors"

// freeBytes is not measured here: JetStream's limit is then never resized
// (a JetStream that is off is still started again).
func freeBytes(string) (int64, error) {
	return 0, errors.New("free space is not measured on this platform")
}
