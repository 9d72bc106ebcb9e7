// Package ingest is the relay's webhook receiver: POST /webhooks/cakework
// (and /webhooks/cakework/build/{succeeded,failed}) for Cakework build
// webhooks, and POST /webhooks/{name} for the generic receivers listed under
// ingest.webhooks.
//
// Guarantees:
//   - Durable before acknowledged: 202 is sent only after the event is in
//     the state store's webhook journal and its fdatasync returned
//     (state.Store.Accept). The outbox publisher moves it to JetStream
//     later; ingest never waits for the bus, so a bus that is down does not
//     stop ingest until the outbox reaches ingest.outbox_limit.
//   - One journal record per request: the dedup check, the seen ids, the
//     queued poller watch (state.AcceptTx.QueueWatch, when the poller runs)
//     and the event commit together or not at all. Concurrent requests
//     share a batch (one fdatasync), and a later request in it sees the ids
//     an earlier one recorded. Ingest does not write the build's state
//     record: the poller owns it, folds the queued watch into its watch list
//     on its next tick and confirms the status with getBuild, recording a
//     change ingest announced (state's MarkChangeAnnounced) without a
//     second event. Ingest reads that record before the batch: a poller
//     commit that races the request announces the same change under the
//     same event id, which JetStream drops.
//   - Idempotent: a repeated webhook-id (or, when the sender gives none, a
//     repeated event id) is answered 200 {"id", "duplicate": true} and
//     publishes nothing. Seen ids are kept (journal, then bbolt) for
//     ingest.seen_ttl, so this holds past JetStream's duplicate window and
//     across restarts. A Cakework webhook-id is kept with the id of the
//     event its first delivery published, and a repeat is answered with
//     that id whatever its body (with no id if the webhook-id was
//     remembered before ids were kept with it). A Cakework build status
//     the poller already recorded, or an earlier webhook already announced
//     (the change id in the seen ids), is a duplicate too, as is a late
//     "created" for a finished build. Event ids are deterministic, so
//     anything that slips through is still dropped by JetStream's dedup.
//   - Nothing from a rejected request: a request answered with anything but
//     202 has written no event. Auth, content type, size and shape are all
//     checked before the transaction.
//   - Backpressure: when the outbox holds ingest.outbox_limit events or the
//     state store is closed or failing, requests are answered 503 with
//     Retry-After, before the body is read.
//   - In a fleet (Options.Fleet, cluster.enabled) the local journal is not
//     used for webhooks: the dedup check reads the fleet's seen bucket
//     (every member's ids, kept ingest.seen_ttl), the event is published
//     to JetStream synchronously, and its ids are written to the bucket,
//     all before the answer (fleet.go). A 2xx then means the event is in
//     the stream, acknowledged by its quorum when bus.replicas >= 3, so a
//     member whose data_dir vanishes loses nothing it acknowledged. A
//     repeat at any member is a 200 duplicate: from the bucket, or from
//     JetStream's duplicate window when two members race with one id.
//     While the bus is down a member answers 503 with Retry-After instead
//     of journaling (the sender retries; a single relay keeps taking
//     webhooks into its journal through a bus outage).
//   - Bounded bodies: the auth that needs no body (Standard Webhooks
//     headers and timestamp tolerance, the token, an HMAC header's
//     presence) is checked before the body is read, and the body bytes
//     of all requests together are capped (http.max_body_bytes_in_flight,
//     reserved at the declared Content-Length): past the cap, 503 with
//     Retry-After before reading. Only buffers up to 64 KiB go back to
//     the pool. A body that is not valid UTF-8 or nests JSON more than 512
//     levels deep is refused with 400: no sink could deliver it.
//   - Constant-time secrets: signatures, HMACs and tokens are compared with
//     crypto/hmac.Equal or crypto/subtle.
package ingest
