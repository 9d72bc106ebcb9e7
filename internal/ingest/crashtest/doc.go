// Package crashtest holds the ingest crash test: it builds the real relay
// binary, sends it many concurrent signed webhooks, kills it with SIGKILL
// partway, restarts it, retries what was not acknowledged, and checks that
// every webhook is on the stream exactly once. It has no non-test code; it
// is a separate package so that building the binary does not slow down the
// ingest package's own tests.
package crashtest
