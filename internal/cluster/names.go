package cluster

// Names of what the fleet keeps on NATS, derived from bus.stream so that
// fleets on different streams of one NATS never meet.

// FenceSubject is the subject in the events stream whose last sequence
// fences the leader's publishes: a new leader writes it when it takes
// over, and every event the leader publishes is conditional on it
// (Nats-Expected-Last-Subject-Sequence-Subject).
func FenceSubject(stream string) string { return "relay.fleet." + stream + ".term" }

// Bucket is the JetStream key-value bucket of the fleet's lease and the
// leader's knowledge (the poller's records and auto-stop's).
func Bucket(stream string) string { return "RELAY_" + stream }

// ControlSubject is where members forward admin requests (watch, unwatch,
// activity) to the leader.
func ControlSubject(stream string) string { return "relay.fleet." + stream + ".control" }
