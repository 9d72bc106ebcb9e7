// Package state is the relay's memory: one bbolt file, data_dir/relay.db,
// and the webhook journal, data_dir/journal/ (accept.go, package
// internal/journal).
//
// Guarantees:
//   - Exclusive: a second process opening the same file fails within the open
//     timeout with an error that names the lock, instead of waiting forever.
//   - Atomic: everything a caller writes in one Update (a resource's new
//     state, a log cursor, and the events that announce them in the outbox)
//     commits together or not at all.
//   - Durable: Update returns nil only after bbolt's commit, which fsyncs.
//   - Group commit: concurrent Updates are gathered by one commit loop. While
//     a commit runs, the next batch gathers; when several writers are
//     arriving it waits up to LingerFor (200µs) for the batch to fill, so one
//     commit's two fdatasyncs serve more of them. A lone writer never waits.
//     A function that fails is rolled back alone: the batch is retried
//     without it. Functions may therefore run more than once and must only
//     touch the Tx they are given.
//   - Ordered outbox: outbox entries get increasing sequence numbers in commit
//     order. Entries leave the outbox only through DeleteOutbox, which the
//     publisher calls after JetStream acknowledged them.
//   - Webhooks through the journal: Accept makes a webhook's seen ids,
//     queued watches and events durable with one pwrite and one fdatasync
//     per batch, where an Update costs bbolt's two fdatasyncs and a write
//     per page. Their ids count as seen, and their events are in the
//     outbox (PeekOutbox, after the Updates' entries), once that returns.
//     A checkpoint moves the ids and watches into bbolt; Open replays the
//     journal past it. See accept.go.
//   - Versioned: a meta bucket holds the schema version; Open runs the
//     migrations that are newer than the file, and refuses a file written by
//     a newer relay.
package state
