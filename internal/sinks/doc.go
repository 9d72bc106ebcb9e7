// Package sinks is the delivery framework every sink (HTTP callbacks,
// Slack) runs on. Auto-stop is not a sink: it consumes nothing from the
// bus (internal/autostop). A sink implements Sender: it sends one event once and
// says whether a retry could help. Everything else is done here, the same
// way for every sink: the durable consumer, filtering, per-resource
// ordering, retries with backoff, attempt counting, dead-lettering, metrics,
// status, shutdown and replay.
//
// Guarantees:
//   - At least once. A message is acked only after the sink reported Done,
//     or after it was stored on the dead-letter stream (<stream>_DLQ,
//     subject relay.dlq.<sink>). Anything else is redelivered: naked at a
//     clean stop, or after AckWait when the process died.
//   - Per-resource order. Events with the same event.OrderKey (one build,
//     one VM) go to the same lane, and a lane sends one event at a time,
//     retrying its head in place (kept alive on the server with
//     InProgress) until it is delivered or dead-lettered. Different
//     resources proceed in parallel on up to Options.Concurrency lanes.
//     After a crash (not a clean stop) an event that was in flight is
//     redelivered after AckWait and can arrive after newer events about
//     the same resource; a replayed dead letter arrives whenever it is
//     replayed.
//   - Bounded memory. The server hands out at most MaxAckPending
//     unacknowledged messages per sink; a slow or failing sink grows its
//     backlog in the stream, not in the relay.
//   - Retries. A Retry result is tried again after the sink's own delay
//     when it gives one (Retry-After, capped at an hour), else after
//     exponential backoff with jitter (Retry.Initial doubling up to
//     Retry.MaxInterval). Every send counts
//     as an attempt; after Retry.MaxAttempts the event is dead-lettered.
//     The attempt count of a message being retried is kept in the state
//     store, so a restart mid-retry continues the count instead of
//     restarting it.
//   - Disabling. A sink can answer GiveUp with Disable set (HTTP 410 Gone):
//     the event and every later one go straight to the dead-letter stream
//     with a clear error until the relay restarts. Nothing is dropped.
//   - Shutdown. Stop stops pulling, lets sends in flight finish (bounded by
//     its context, after which they are cancelled), and naks everything
//     else so it is redelivered first on the next start.
//
// Stages. A Runner composes four, each in its own file with at most one
// lock, and owns their lifecycle (Start, Stop) and the sink's Status:
//   - consumer (consumer.go): the durable JetStream consumer, the pull
//     iterator, the start gate that holds newer messages back until the
//     previous run's unacked ones came back, the keep-alive (InProgress)
//     of held messages, and the hand-back: naks in stream order at Stop.
//   - lanes (lanes.go): per-resource ordering by event.OrderKey.
//   - delivery policy (policy.go): Policy sends through the Sender and
//     decides, with no NATS in sight: Done acks; Retry waits on the
//     Schedule (internal/backoff over the sink's Retry settings) and tries
//     again; MaxAttempts and GiveUp dead-letter; GiveUp with Disable turns
//     the sink off. Attempt counts come from and go to an Attempts (the
//     state store for the lanes, a fresh count for replays).
//   - dead letters (dlq.go): storing on the DLQ stream, listing, replay.
//
// Senders may have a lifecycle (benthos' outputs): a Connector is
// connected at Start before anything is pulled, a Closer is closed at Stop
// (also after a failed Start). A sender with deliveries no event carries
// (Slack's flood summaries) schedules their retries with the same Schedule,
// so no sender has a retry schedule of its own.
//
// Time is injected (clock.Clock): backoff waits use the clock, so tests move
// a clock.Fake instead of sleeping. Keeping messages alive on the server,
// the start gate and waiting for the bus use real time, because AckWait
// and redelivery run on the server's clock.
package sinks
