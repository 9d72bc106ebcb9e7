// Package bus is the relay's NATS JetStream connection: by default an
// embedded nats-server with JetStream stored under data_dir, or an external
// NATS when bus.url is set.
//
// Guarantees:
//   - Streams exist before Open returns, or (external NATS that is down) are
//     created as soon as the server is reachable; Ready reports which. The
//     event stream (default CAKEWORK) takes <prefix>.> with file storage,
//     the configured duplicate window and max age. The dead-letter stream
//     <stream>_DLQ takes relay.dlq.<sink>.
//   - Every publish carries Nats-Msg-Id, so a repeat inside the duplicate
//     window is dropped by the server and acknowledged as a duplicate.
//   - A publish is acknowledged once the server has stored the message. With
//     JetStream's default sync interval that is the OS page cache: it survives
//     a crash of the relay, not of the machine. The outbox (package state) is
//     what makes "2xx means on disk" true.
//   - An external connection reconnects forever with exponential backoff
//     (500ms doubling to 8s) and logs each disconnect and reconnect. While it is down, publishes fail
//     fast; callers (the outbox publisher) keep the events and retry.
//   - When nats-server turned the embedded JetStream off after a failed
//     write (a full disk), Ready says so, and a probe write is tried every
//     10 s. Once one succeeds, the embedded server is restarted inside the
//     relay (embedded.go): the same store, users, rights and address, so
//     the relay's connection, its subscriptions, the sinks' pull consumers
//     and TCP subscribers reconnect by themselves, and what was stored is
//     kept. A restart that fails is reported by Ready and retried after a
//     backoff (30 s doubling to 5 min); meanwhile a server without
//     JetStream serves core NATS. EmbeddedRestarts counts the restarts.
//   - Close drains the connection and shuts the embedded server down, and is
//     safe to call twice. It keeps to its context's deadline: a restart of
//     the embedded server under way is abandoned (a start in progress is
//     shut down, and none is installed after Close), not awaited.
//
// Consumers are durable pull consumers with explicit acks; a slow sink only
// grows its own backlog in the stream, never the relay's memory.
package bus
