// Package cluster makes several relays on one NATS (cluster.enabled, an
// external bus.url) one fleet: every member takes webhooks and runs the
// sinks, and exactly one member, the leader, runs the poller and
// auto-stop. Coordination is JetStream's own: a key-value bucket, and
// publishes conditional on a subject's last sequence. The relay runs no
// consensus of its own.
//
// # The lease
//
// The bucket RELAY_<stream> (Bucket) holds the key "lease": the holder's
// name and a term number. The holder renews it every lease_ttl/3 with a
// compare-and-set on the revision it wrote last. A standby reads it every
// lease_ttl/4; when it has not seen a new revision for lease_ttl (or the
// lease was released, member ""), it takes it with a compare-and-set on the
// revision it saw, as term+1. Of several standbys one wins. A leader that
// is killed is replaced within lease_ttl plus two reads (under 2x
// lease_ttl); one that shuts down releases the lease and is replaced at the
// next read.
//
// The holder stops leading on its own when lease_ttl minus a margin
// (lease_ttl/5) has passed since it sent the last renewal that succeeded.
// A standby counts lease_ttl from when it saw that renewal, which is later;
// so with clocks that run at about the same rate, the old leader has
// stopped before anyone takes over. A frozen process (SIGSTOP, a long
// pause) finds on waking that its lease ran out (Elector.Leading) before it
// does anything else.
//
// # Fencing: what a member that lost the lease can still do
//
// Nothing. Time-based leases cannot stop a process that checked its lease,
// then froze, then woke up and sent. So the leader's writes are fenced by
// the engine:
//
//   - When a member takes the lease for term n, it writes n to the key
//     "term" of the bucket and publishes n on FenceSubject in the events
//     stream, each with a compare-and-set on the last sequence it read.
//     Term.KVFence and Term.StreamFence are the sequences of those writes.
//   - Every event the leader publishes carries
//     Nats-Expected-Last-Subject-Sequence = StreamFence with
//     Nats-Expected-Last-Subject-Sequence-Subject = FenceSubject, and every
//     record it writes to the bucket the same against the "term" key
//     (KVFence). Once a later leader wrote its fences, JetStream refuses
//     all of them (wrong last sequence): the stale member publishes
//     nothing it polled, advances no cursor, and, since auto-stop records
//     a stop in the bucket before it calls stopVM, stops no VM and warns
//     none. A refused commit ends its term (ErrNotLeader).
//   - The one write no fence covers is the stopVM call itself. Auto-stop
//     records the stop (fenced) and checks the lease again right before
//     the call; a process frozen in the microseconds between that check
//     and the request could still send it after a failover, and the new
//     leader, finding the stop recorded but not completed, would call
//     again and get 409 (counted as stopped): two calls, one stop. The
//     same happens, more often, to a call still waiting for its answer
//     when the term ends (a leader starved of CPU misses its renewals)
//     or past cakework.timeout: the call is cut off, and the next leader
//     (or the next check, 15 s later) calls again. That is the
//     likely cause of 6 calls for 3 stops that TestFleetLeader once saw
//     on a machine running two test suites at once (not reproduced).
//   - Fenced writes are sequential: a stream refuses a second conditional
//     write on a subject while one is in flight, so the Store commits one
//     transaction at a time, one message at a time. Such a refusal (or a
//     publish whose answer timed out while the next one was sent) looks
//     like a fence refusal, and costs a failover, not a wrong write.
//   - The stream's fence is one message, kept for bus.max_age like any
//     other: a leader that has led longer than that finds its next publish
//     refused, and the fleet fails over once (to itself or another).
//   - Resignations are per term: a term that is being torn down fails its
//     last commits, and those never end the next term.
//
// # No seam at failover
//
// The leader's knowledge is the poller's records (builds, VMs, the
// baseline, watches, log cursors) and auto-stop's (per VM: last signal,
// warning and stop; the last minute's stops), in the bucket under p.* and
// s.* (Store). A new term loads all of it, after its fences are written,
// so nothing the old leader sends can land after the read. A commit
// publishes its events first, then writes its records. If the leader dies
// between the two, the next one finds the old records and polls the same
// change again: state events (build, VM, vm.idle, vm.autostopped) have
// deterministic ids, and JetStream drops the repeat within
// bus.duplicate_window (at least 3x lease_ttl, which config checks, so
// longer than a failover). Log events are not
// safe that way (a later poll may cut a batch differently), so the last
// log event of a stream in each commit carries the stream's cursor in the
// header Relay-Cursor, and a new term takes a log stream's cursor from its
// last log event when that event is newer than the bucket's record. The
// stream is the record of where each log stream was left off.
//
// A commit that fails part way (NATS away mid-commit) leaves the leader
// unsure what landed: it resigns, and the next term (this member or
// another) loads again. A commit whose log event JetStream drops as a
// repeat (the first page of a stream whose cursor never reached the
// bucket) compares it with the event on the stream: other lines mean the
// stream's cursor is the truth; it is written, and the commit stops, so
// the lines after it are read again, never skipped.
//
// The load at the start of a term reads the bucket through a consumer
// that may sit on a lagging replica; it is complete only once it has
// shown the term's own fence write, which came after everything the
// previous leader wrote. The term's context ends when its lease runs out
// (the renewal in flight is cut at that moment), which cancels a stop
// call still waiting for the rate limiter.
//
// # What any member does
//
// The admin API's watch and activity requests are forwarded to the leader
// over NATS (ControlSubject), which answers them; relay.watch.build and
// relay.vm.activity are served by the leader only. Builds that ingest saw
// at any member are queued in the bucket (in.watch.*) and folded into the
// watch list by the leader.
package cluster
