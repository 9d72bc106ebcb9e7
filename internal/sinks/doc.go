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
//   - One dead letter per failure. Its Nats-Msg-Id is stable for the
//     failure and keyed by the install key (bus.KeyedID), so nobody else
//     can take it first; a publish answered as a duplicate of a message
//     the relay did not sign is published again under a fresh id. Before
//     each publish the message's attempt record gets the intent (time and
//     msg id); a redelivered message (NumDelivered > 1) whose record has
//     one is looked for on the DLQ (deadLetters.alreadyStored: the sink's
//     subject around the intent's time, headers only, bounded, the match
//     Relay-Mac verified), so a run that stopped between the DLQ publish
//     and the ack does not get it stored twice after
//     bus.duplicate_window. No intent, no look. A look that fails, or an
//     intent that could not be written, stores it again: at least once.
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
//   - consumer (consumer.go, pin.go): the durable JetStream consumer, the
//     pull iterator, the start gate that holds newer messages back until
//     the previous run's (or the previous pinned member's) unacked ones
//     came back, the keep-alive (InProgress)
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
// A fleet (cluster.enabled; Options.Member set). Every member runs every
// sink, on one durable consumer per sink shared by the fleet, and each
// event still goes to each sink once (at least once under faults), in
// per-resource order. The consumer is a JetStream priority group with the
// pinned_client policy (PinnedGroup; nats-server 2.11+): the server
// delivers only to the member it pinned and answers the others' pull
// requests with nothing; when the pinned member sends no pull request for
// PinnedTTL (cluster.lease_ttl: it died, froze or lost NATS; its requests
// live a third of that) the server pins another waiting member. So:
//   - One member sends at a time, and the lanes' ordering holds as on a
//     single relay.
//   - Failover is the server's: no lease of ours, no rebalancing. The new
//     member gets the previous one's unacked messages after AckWait (or
//     at once when the previous one gave them back), and holds newer ones
//     back until they came, until the previous member acked them all (it
//     was frozen and thawed), or AckWait+5s: the start gate, closed again
//     at each new pin (pin.go).
//   - A member that lost its pin while frozen and wakes up gives back (nak)
//     everything it holds and has not started sending, and sends nothing
//     new; the one send it had in flight may reach the target a second
//     time, which at-least-once allows.
//   - Records (attempt counts; Slack's thread parents, log tails and flood
//     windows) live in the fleet's sinks bucket (KVRecords), written
//     compare-and-set, so the next active member continues a Slack thread
//     and an attempt count where the last one left them. A sender's own
//     background sends (Slack's summaries) run only while Runner.Active.
//   - The sink's active member is in its status (activeMember): the
//     member whose recorded pin id is the server's current one.
//   - Dead letters are on the DLQ stream, so any member lists and replays
//     them (a replay is sent by the member that was asked).
//
// Why pinning, not partitions by resource: a partitioned fleet needs a
// partition count fixed up front, an assignment of partitions to members
// that moves when members come and go (the consumer groups JetStream does
// not have; the partitioned variant of priority groups still needs a
// client-side rebalancer), and one consumer per partition and sink. A sink
// is one target (one Slack channel, one callback URL) that is rate
// limited or slow on its own side, so spreading its sends over members
// buys little throughput, while ordering, Slack's per-channel limiter and
// flood windows would have to be shared across members. Pinning keeps
// every single-relay guarantee as it is, with the server doing the
// failover. What it costs: one member's CPU per sink (sinks spread over
// members only by chance of which is pinned), and a failover waits
// PinnedTTL, plus AckWait for the messages the dead member held.
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
