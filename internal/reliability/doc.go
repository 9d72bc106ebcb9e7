// Package reliability holds the relay's reliability and load harness: it
// builds and runs the real relay binary (and, for external-bus tests, a real
// nats-server binary), drives it with signed webhooks and a Cakework
// simulator, kills things at chosen moments, and reads back what reached
// JetStream and the callback receivers.
//
// The tests in this package (crash matrix, external NATS outage, sink
// outage, short soak, auto-stop timing) are the CI forms. bench/reliability runs the long
// forms and prints the figures recorded in BENCHMARKS.md.
//
// Nothing here is used by the relay itself, and the relay binary does not
// link it (go list -deps ./cmd/relay does not name it). It stays under
// internal/ rather than bench/ because its CI forms are this package's
// tests, run by the README's test command, and bench/reliability imports
// it for the long forms; a _test.go file could not be shared that way.
package reliability
