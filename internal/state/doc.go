// Package state is the relay's memory: one bbolt file, data_dir/relay.db,
// and the webhook journal, data_dir/journal/ (package internal/journal).
//
// A Store is composed of one part per write path, each with its own lock:
//   - the bbolt group commit of Updates (store.go): the poller's records
//     and events, sink bookkeeping, watches;
//   - the journal write path of Accepts (accept.go): webhooks;
//   - the checkpoint (checkpoint.go), which moves journaled ids and watches
//     into bbolt and records how far the bus acknowledged;
//   - the outbox queue (outboxqueue.go): both queues of events waiting for
//     the bus, the acknowledged ones held until a bus sync, and the sync;
//   - the webhook-id index (seen.go), in memory, rebuilt at Open.
//
// Guarantees:
//   - Exclusive: a second process opening the same file fails within the open
//     timeout with an error that names the lock, instead of waiting forever.
//   - Atomic: everything a caller writes in one Update (a resource's new
//     state, a log cursor, and the events that announce them in the outbox)
//     commits together or not at all; likewise everything one Accept
//     records (its ids, watches and events: one journal record).
//   - Durable: Update returns nil only after bbolt's commit, which fsyncs;
//     Accept only after the journal's fdatasync.
//   - Group commit: concurrent Updates are gathered by one commit loop. While
//     a commit runs, the next batch gathers; when several writers are
//     arriving it waits up to LingerFor (200µs) for the batch to fill, so one
//     commit's two fdatasyncs serve more of them. A lone writer never waits.
//     A function that fails is rolled back alone: the batch is retried
//     without it. Functions may therefore run more than once and must only
//     touch the Tx they are given. Accepts are batched the same way, but
//     each function runs once.
//   - Webhooks through the journal: Accept makes a webhook's seen ids,
//     queued watches and events durable with one pwrite and one fdatasync
//     per batch, where an Update costs bbolt's two fdatasyncs and a write
//     per page. Their ids count as seen, and their events are in the
//     outbox, once that returns. Webhook ids, change marks and queued
//     watches are recorded only this way (AcceptTx); Tx only reads the
//     marks (ChangeAnnounced). A checkpoint moves the ids and watches into
//     bbolt; Open replays the journal past it. See accept.go.
//   - Outbox order: the poller's events (Updates) are published in their
//     commit order, and the webhooks' events (Accepts) in theirs, but the
//     two are not ordered with each other: PeekOutbox returns the first
//     queue then the second, and with a backlog in both gives each half of
//     a batch (the README's "The webhook journal" says what a user sees).
//     Entries leave the outbox only through DeleteOutbox, which the
//     publisher calls after JetStream acknowledged them; with a bus sync
//     set (SetBusSync), only after the next checkpoint's sync.
//   - Damaged state is refused, not reset (damage.go): Open fails with
//     ErrStateLost when relay.db is missing or empty beside journal
//     segments, and with ErrCorrupt when the file is truncated or a page
//     its buckets reach does not read back (read-only first, so bbolt's
//     panics become errors). Created reports a relay.db Open made, for the
//     app's check against a non-empty embedded stream.
//   - Versioned: a meta bucket holds the schema version; Open runs the
//     migrations that are newer than the file, and refuses a file written by
//     a newer relay.
package state
