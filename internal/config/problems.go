package config

import "github.com/cakework-relay/cakework-relay/internal/confcheck"

// Problem is one thing wrong with a configuration. Path is the key path
// (sinks.http[0].url); it is empty for problems with the file as a whole.
// Msg says what is wrong and, where it can, how to fix it. Neither ever
// contains the value of a secret.
type Problem = confcheck.Problem

// Problems is every problem found in a configuration, in the order found:
// the file's structure first (unknown keys, wrong types), then validation.
// It is the error returned by Parse, Load and Validate; use errors.As to get
// at the list. Error lists them one per line, as "key.path: what is wrong".
type Problems = confcheck.Problems
