package config

import (
	"strings"
)

// Problem is one thing wrong with a configuration. Path is the key path
// (sinks.http[0].url); it is empty for problems with the file as a whole.
// Msg says what is wrong and, where it can, how to fix it. Neither ever
// contains the value of a secret.
type Problem struct {
	Path string
	Msg  string
}

func (p Problem) String() string {
	if p.Path == "" {
		return p.Msg
	}
	return p.Path + ": " + p.Msg
}

// Problems is every problem found in a configuration, in the order found:
// the file's structure first (unknown keys, wrong types), then validation.
// It is the error returned by Parse, Load and Validate; use errors.As to get
// at the list.
type Problems []Problem

// Error lists the problems one per line, as "key.path: what is wrong".
func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

func (ps *Problems) add(path, msg string) {
	*ps = append(*ps, Problem{Path: path, Msg: msg})
}
