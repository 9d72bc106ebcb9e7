// Package cakeworksim is an in-memory Cakework API for tests, the demo and
// `relay simulate`. It serves every route of docs/cakework-api.md through
// Handler, with the quirks the real API had, so that a client that works
// against the sim works against Cakework.
//
// Guarantees and behaviour:
//
//   - Time comes only from Options.Clock. The state machine is brought up to
//     the clock before every request (and by Step), so with a clock.Fake a
//     test decides exactly when builds finish and VMs log.
//   - Builds go created -> succeeded|failed after BuildDuration, writing a
//     build log line every BuildLogEvery. VMs started with startVM (or a
//     started cached VM) log every VMLogEvery until they stop or go quiet.
//     stopVM destroys; a second stop answers 409. Cached VMs stop and start.
//   - Each route answers its times in the form the reference shows for it:
//     builds and getVM "2006-01-02 15:04:05.000" (no zone), startVM/cacheVM
//     with a -08:00 offset, listVMs with Z, log lines in unix ms, log
//     windows "2006-01-02 15:04:05 UTC". cacheVM spells volumeGb, the rest
//     volumeGB.
//   - Errors use a body shape fixed per route (DefaultErrorShape): {"error"},
//     {"message"}, a bare JSON string, or nothing for 401.
//   - Logs page like Logtail (see logsHandler): the window is whole seconds,
//     a token is only valid with the same from, to, order and query, and it
//     marks the last line served by (timestamp, sequence), so lines sharing
//     a millisecond and lines appended mid-read are neither lost nor
//     repeated.
//   - Faults (SetFaults) inject errors, latency, 429 bursts with Retry-After,
//     truncated and garbage 2xx bodies, globally or per route. Calls counts
//     every request per route.
//   - Build webhooks go out from Step (and Run) in Cakework's shapes,
//     optionally signed with a Standard Webhooks secret, with a stable
//     webhook-id per build and status. Split mode adds /build/<status> to
//     the URL's path, keeping its query (?token=...). A failed webhook is
//     retried with backoff on the sim's clock for WebhookRetryFor (30s by
//     default), so a relay restart does not lose it.
//   - The sim holds everything in memory and never deletes logs; it is meant
//     for minutes-long demos and tests, not for soak runs.
package cakeworksim
