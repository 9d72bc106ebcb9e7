// Package autostop stops idle VMs, the most dangerous thing the relay does:
// stopVM destroys a one-shot VM. Every rule here leans towards keeping a VM.
//
// A started VM's last activity is the latest of its start (or, for a VM
// already running when the relay began watching it, that moment), its
// newest log line, and an activity signal (POST /v1/vms/{id}/activity, or NATS
// relay.vm.activity). All three are durable: the start and the newest line
// are in the poller's bbolt records, signals in this package's.
//
// The idle clock only runs while the relay actually knows. A VM the relay
// cannot see is neither warned about nor stopped: until this process has
// swept and (with poller.logs.vms) read its log to the end, while the last
// sweep failed, and while its log polls fail or back off (no poll is made
// then, so no failure is recorded, yet the VM is still unseen). Only a
// poll that read the log to the end, not one that left pages unread, ends
// that. The clock counts from idleSince = the latest of the last activity,
// any failed sweep or log poll, and when the sweep and the log were read
// again after a failure: once a VM can be seen again it must stay quiet
// for the whole idle_after before it is stopped.
//
// Idle clocks follow their deadlines. The loop evaluates every started VM
// at once when it starts, then at the earliest moment one is due (its
// warning or its stop), whenever the poller kicks it after a VM sweep or a
// logs pass (Kick), and at least every sinks.autostop.check. So vm.idle
// and the stop come within one poll interval of when they are due, for
// second-long and hour-long settings alike: on the dot when the poller's
// knowledge is fresh, else at the poll that brings it.
//
// At idleSince + idle_after - warn_before it emits vm.idle once per idle
// period. It stops at stopAt = the later of idleSince + idle_after and the
// warning + warn_before, so a warning always comes warn_before ahead, even
// after the relay was down. It stops only when, at that moment:
//   - the VM is still started, by the latest sweep;
//   - a VM sweep and (with poller.logs.vms) a log poll of that VM succeeded
//     after the warning, and none failed since idleSince;
//   - its image is not in exclude_images (with exclude_images set, a VM
//     whose image is unknown is kept too);
//   - fewer than max_stops_per_minute stops happened in the last minute
//     (beyond the cap it logs and does nothing destructive);
//   - it was not stopped already in this start (never twice);
//   - a fresh reading of the poller's view, taken right before the call,
//     still gives the same idle period (earlier stops in the same check may
//     have waited on the rate limit).
//
// stopVM (stopCachedVM for ids in cached_vms) answering 409 counts as
// stopped. Then vm.autostopped is emitted with the idle time and dryRun, and
// "VM auto-stopped" is logged (a warning; information in dry run). With
// dry_run it emits both events and calls nothing.
//
// Failure times are kept in memory. After a restart a VM is unseen until
// the new process has swept and read its log to the end; the rule that a
// sweep and a log poll read to the end must succeed after the warning still
// holds,
// and log cursors are gap-free, so lines written while polling failed are
// read before any stop. The last minute's stops are kept in bbolt, so a
// restart loop cannot exceed max_stops_per_minute.
//
// The stopper runs in the process that runs the poller and reads the
// poller's in-process knowledge, never another process's events.
//
// It is a producer, like the poller: it consumes nothing from JetStream, it
// reads what the poller knows and writes events (vm.idle, vm.autostopped).
// That is why it is not under internal/sinks. Its settings keep their key,
// sinks.autostop, so config files do not change.
package autostop
