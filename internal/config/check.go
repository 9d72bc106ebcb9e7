package config

import (
	"errors"
	"fmt"
	"io"
)

// CheckConfig is `relay check-config FILE`: it prints the summary line to
// stdout and returns 0, or prints every problem, one per line, to stdout (the
// problems are the command's report, as with linters) and returns 1. A file
// that cannot be read is one line on stderr and 1.
func CheckConfig(path string, env func(string) (string, bool), stdout, stderr io.Writer) int {
	c, err := Load(path, env)
	var probs Problems
	if errors.As(err, &probs) {
		fmt.Fprintln(stdout, err)
		return 1
	}
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	fmt.Fprintln(stdout, c.Summary())
	return 0
}
