// Package poller turns the Cakework API's state into events: a VM
// inventory sweep, watched builds, and log tailing with durable cursors,
// each on its own cron schedule (poller.vms, poller.builds, poller.logs).
//
// # Guarantees
//
//   - Every change is recorded together with its event. A VM's new state,
//     a build's new status, or a log cursor is written in the same bbolt
//     transaction as the outbox entry that announces it; there is no
//     moment when one is on disk without the other.
//   - No events from bad data. A VM sweep that fails on any page (5xx,
//     timeout, 429, garbled or truncated body) changes nothing. A failed
//     getBuild or log page emits nothing and moves no cursor.
//   - No first-run flood. The first complete sweep on fresh state is a
//     baseline and emits nothing (unless poller.vms.emit_baseline). VMs
//     running then are tailed from the baseline time, not their first line.
//   - No invented destruction. A VM missing from a complete list is asked
//     for with getVM: 404 or "destroyed" confirms it (vm.destroyed); another
//     state is taken as the observation; an error leaves it for the next
//     sweep.
//   - Log lines exactly once, in order, across restarts and kill -9. The
//     cursor holds the pending resume point (pagination, from and to as the
//     server gave them), the newest emitted timestamp, and the multiset of
//     lines emitted at that millisecond (hash of level+message -> count).
//     Windows are whole seconds, so each new window starts at the second of
//     the newest emitted line and the multiset drops what was already
//     emitted; identical lines in one millisecond are all kept. The cursor
//     commits with the page's log event. A line the API inserts later with
//     a timestamp older than the newest emitted one is not seen (no log API
//     window reaches back for it).
//   - Deterministic ids. VM events: event.VMStateID(id, state, updatedAt)
//     (a VM confirmed by a 404 has no upstream updatedAt: the last known one
//     is used and the event time is when it was observed). Build events:
//     event.BuildStatusID, the id ingest uses, so a webhook and a poll of
//     the same change are one event. Ingest does not write BuildState (the
//     poller owns it); it remembers the changes it announced for seen_ttl,
//     and the poller records those without a second event. Should that
//     memory be gone, the repeat carries the same id for JetStream's
//     dedup. Log events:
//     event.LogBatchID(kind, id, first line's
//     timestamp, lines at that millisecond emitted before it).
//   - Ticks never overlap (SkipIfStillRunning, and Tick* refuse with
//     ErrTickRunning), run in UTC, recover from panics, start after a random
//     delay up to poller.jitter, and Stop waits up to
//     poller.shutdown_timeout for a running tick before cancelling it.
//   - Upstream trouble. All calls go through one cakework.Client: one rate
//     limiter, and a 429 pauses every schedule until Retry-After (a tick
//     that finds the pause on makes no call). 5xx, timeouts and garbled
//     answers back off per resource (a VM's getVM, a build, a log stream)
//     with jitter. A 401 fails the "cakework" readiness check until a call
//     succeeds, and is logged at most once a minute.
//   - Bounded. Build watches are capped (poller.builds.max_watched): a
//     queued watch past the cap is refused (counted, logged at most every
//     5 minutes), Watch answers ErrWatchListFull. Ticks read watches a page
//     at a time (WatchesPage), never the whole list. A build Cakework
//     answers 404 for backs off without failing a schedule and is dropped
//     after poller.builds.drop_unknown_after (logged once); a 404 log stream
//     is counted (relay_poller_log_streams_not_found_total), not a schedule
//     failure. Backoffs of resources no tick calls for an hour are pruned.
//
// # Cost
//
// A VM sweep costs one listVMs call per page plus one getVM per vanished
// VM. A builds tick costs one getBuild per unfinished watched build. A logs
// tick costs, per tailed stream, one call when there is nothing new and
// one call per page of new lines (up to poller.logs.max_pages; the rest is
// read next tick from the stored resume point). With cakework.rate_limit R
// a tick over N streams needs at least N/R seconds; a tick that overruns
// its schedule makes the next one skip.
//
// # What is tailed, and for how long
//
//   - Watched builds (poller.logs.builds), from their first line. A
//     finished build's watch is deleted once a logs pass that started after
//     it finished found nothing new. The cursor is kept, so watching the
//     build again resumes instead of repeating.
//   - Watched function builds (PUT /v1/watches/function-builds/{id}): there
//     is no status endpoint, so they are tailed until DELETE, or until a
//     pass finds nothing new and no line arrived for
//     Options.FunctionBuildIdle (10 minutes) since the last new line or the
//     watch. A 404 means "no log yet". The cursor is kept.
//   - VMs (poller.logs.vms) while they are started: the sweep creates the
//     cursor in the transaction that records the VM running (also for a
//     VM that started and stopped between two sweeps). Once a VM is in any
//     other state, its last lines are drained and the cursor deleted; its
//     last timestamp is kept on the VM record so a cached VM that starts
//     again resumes after it.
//
// # For in-process consumers (the auto-stopper)
//
//   - VMKnowledge(id) says how fresh the poller's view of a VM is: the last
//     good and failed sweep, the last good and failed logs pass for that
//     VM, its state, and its newest log line (from the cursor, so it
//     survives restarts). A logs pass counts as good only when it read the
//     stream to its end. SweepFailing and LogFailing say the relay cannot
//     see the VM right now: the last sweep failed, or a logs pass failed
//     and none has read the stream to its end since (while the stream
//     backs off, no pass fails, yet the VM is still unseen).
//     SweepRecovered and LogRecovered say since when it can see again.
//   - OnVMKnowledge(f) has f called after each VM sweep and logs pass, so
//     the auto-stopper evaluates idle clocks on fresh knowledge.
//   - VMsInState(st) lists the VMs last seen in a state, with their image,
//     since when, and that knowledge: what the auto-stopper plans from.
//   - Client() is the shared API client: use it for stopVM so the rate
//     limit and 429 pause cover every call.
//
// Watches come from poller.watch_builds (written at Start, source
// "config"), the admin API (Register), NATS request-reply on
// relay.watch.build (relay.unwatch.build removes one), and ingest, which
// queues them (state.AcceptTx.QueueWatch); every builds and logs tick, and
// Watch, Unwatch and Watches, first fold the queue into the watch list
// (applyQueuedWatches).
//
// Where the knowledge lives: the poller reads and writes its records
// (builds, VMs, log cursors, watches, the baseline) and the events that
// announce them only through the Store and Tx interfaces it declares
// (store.go), in transactions that commit a change with its event.
// StateStore puts them in the relay's bbolt file. In a fleet,
// cluster.Store keeps them in a replicated JetStream bucket, and only the
// leader runs the poller: each term starts it (knowledge reloaded from the
// Store) and stops it. How a member that lost the lease is kept from
// publishing, advancing a cursor or stopping a VM (fences on every write)
// is in internal/cluster's package doc. Nothing in the poller switches on
// where the knowledge is; the in-memory view (knowledge.go) is rebuilt
// from the Store at each Start.
package poller
