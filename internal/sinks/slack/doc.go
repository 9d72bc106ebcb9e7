// Package slack is the Slack sink. It runs on the shared sinks framework
// (internal/sinks): it sends each event once and classifies the answer;
// retries, ordering, attempt counting and dead letters are the framework's.
//
// Two modes, chosen by the config entry:
//   - Bot token (chat.postMessage / chat.update). Each build and VM gets one
//     parent message, a status card updated in place; later events about
//     it are thread replies. The parent's channel and ts live in the state
//     store (sink record parent/<kind>/<id>), so threads survive restarts.
//   - Incoming webhook: one message per event, no threads, no updates.
//
// Guarantees:
//   - At least once, idempotent where Slack allows it. A thread reply that
//     was posted is remembered (by event id) before the card is updated, so
//     a retry after a failed update does not post the reply again. A crash
//     between a post and its record can repeat one message.
//   - Nothing acked is lost to flood control. More than Flood.Threshold
//     events of one type within Flood.Window are folded into a summary: the
//     folded event is written to the state store (sink record
//     flood/<type>) before Send reports it delivered, and a flusher posts
//     the summary when the window ends, retrying until it is posted, across
//     restarts; a failed summary stays pending. A folded event about a
//     resource with a parent still updates that parent (the card is marked
//     stale and refreshed by the flusher).
//   - At most one write per second per channel (a limiter on the injected
//     clock; waiting honours ctx). chat.update counts too.
//   - Rate limits (HTTP 429) become a Retry with Slack's Retry-After, never
//     a dropped event. Configuration errors Slack reports (invalid_auth,
//     channel_not_found, not_in_channel, is_archived, revoked tokens,
//     missing scopes, a deleted webhook) dead-letter the event with an
//     error that says which config key to fix. Network errors and 5xx
//     retry; unknown Slack error codes retry too (and end in the DLQ after
//     Retry.MaxAttempts).
//   - Failed builds show their last 20 log lines. The sink always receives
//     build.log (SinkOptions adds it) and keeps a ring of the last 20 lines
//     per unfinished build in the state store (sink record
//     logs/build/<id>); a build.log the user did not ask for is recorded
//     and acked without posting.
//   - The token and the webhook URL never appear in errors or logs.
//
// Lifecycle. New only checks the config and builds; it starts nothing.
// Connect (sinks.Connector, called by the runner at Start) starts the token
// check and the flusher; Close (sinks.Closer) ends them. Nothing else needs
// cleaning up when building a set of sinks fails half way.
//
// The flusher runs under the framework's retry. Summaries and card
// refreshes are deliveries no event carries, so they cannot go through the
// runner's lanes: a summary is a durable record, not a stream message, and
// a lane would hold every other summary behind one failing post. The
// flusher therefore posts each once and classifies the answer like Send,
// and the wait before the next try comes from sinks.Schedule, the same
// schedule the runner uses for this sink's events (its Retry settings over
// internal/backoff, honouring Slack's Retry-After). A summary's attempt
// count and next try are kept in its record, so the schedule survives a
// restart; a stale card's count is kept in memory (its stale mark is the
// durable part). Unlike events, a summary is never dead-lettered after
// Retry.MaxAttempts: it holds events already acked, so it stays pending.
//
// Time is injected (clock.Clock): the limiter, the flood window and the
// flusher run on it, so tests move a fake clock instead of sleeping.
package slack
