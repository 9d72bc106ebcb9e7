package main

import (
	"context"
	"fmt"
	"io"
)

// runSimulate is replaced by the simulator issue.
func runSimulate(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "relay simulate: not yet available")
	return 1
}
