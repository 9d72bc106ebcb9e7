// Package cakework is a typed client for the Cakework REST API, written to
// the facts in docs/cakework-api.md rather than the reference text where they
// disagree (routes under /v1, listVMs at /v1/vms, destroyCachedVM at
// /v1/vm/cached/{id}/destroy, 409 on stop).
//
// Guarantees:
//
//   - Every call takes a ctx, sends X-Api-Key and User-Agent
//     cakework-relay/<version>, and is bounded by Options.Timeout.
//   - No half results. A 2xx body that is garbled, truncated or the wrong
//     shape (a build without buildId, a VM without id, a list without vms,
//     a log line without timestamp, a time in no known format) yields the
//     zero value and an error wrapping ErrMalformedResponse.
//   - Times are parsed from all five API forms (see ParseTime) and are UTC.
//     Build and VM marshal to one normalized shape: camelCase, RFC 3339 UTC,
//     volumeGB.
//   - Errors: non-2xx answers are *APIError with the status and the message
//     from whichever body shape came back; the body never makes the call fail
//     differently. IsNotFound, IsConflict, IsUnauthorized, IsRetryable,
//     IsAlreadyStopped and RetryAfter classify them. A 409 from stopVM or
//     stopCachedVM is "already stopped", which callers treat as success.
//   - Rate: one limiter for all calls of a Client. A 429 pauses every caller
//     of the Client until its Retry-After (1s if absent, capped at 5m) and is
//     returned to the caller that got it; calls made during the pause wait.
//   - The client never retries. Callers keep an internal/backoff schedule
//     per resource, honouring RetryAfter(err).
//   - Logs: PageLogs follows pagination by sending back all three of
//     pagination, from and to (the server's from/to strings verbatim) with
//     every other parameter unchanged, stops at a page budget, and hands out
//     a serializable resume point (LogQuery) with each page.
//   - Log windows are whole seconds (the query form has no fraction): from
//     covers its whole second, so a caller resuming from its last line's time
//     sees that second again and must drop what it already has. Lines sharing
//     a millisecond are only told apart by content.
//   - The API key never appears in errors or logs, even if a server echoes it.
package cakework
