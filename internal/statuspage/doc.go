// Package statuspage is the live page for operators at GET / on the HTTP
// listener: plain HTML, CSS and JavaScript embedded in the binary (no CDN,
// no build step, nothing fetched from any other host), fed by Server-Sent
// Events.
//
// What it guarantees:
//
//   - No admin token, no page: with http.admin_token empty, GET / says how
//     to turn it on and every other route of the page answers 404 with the
//     same advice. Nothing about the relay is shown.
//   - No session, no data: the HTML and its assets hold no relay data; the
//     event stream and the actions answer 401 without a session. Sign-in
//     (POST /ui/signin with the admin token) sets a session cookie:
//     HttpOnly, SameSite=Strict, Path=/, Secure when the request came over
//     TLS (or X-Forwarded-Proto: https), expiring with the session.
//     Sessions live in memory, at most MaxSessions (the oldest is dropped
//     for a new one) for at most SessionTTL; a restart signs everyone out.
//   - Cross-site requests change nothing: every POST (sign-in, sign-out,
//     actions) is refused when Sec-Fetch-Site is present and not
//     same-origin, or Origin is present and not this host; actions also
//     need the session's CSRF token in X-CSRF-Token, which only a page of
//     this origin can read (GET /ui/session). The cookie is SameSite=Strict
//     on top of that.
//   - One source of truth: the page shows the map GET /v1/status builds
//     (httpapi.Server.Status) and the answers of GET /v1/watches and GET
//     /v1/dlq, and its actions (replay, watch, unwatch, VM activity) run
//     the admin handlers themselves through httpapi.Server.ServeAdmin.
//   - Bounded: at most MaxClients event streams (503 beyond), each with a
//     ClientBuffer-message queue; a client that falls that far behind is
//     dropped (its browser reconnects and starts from a fresh snapshot),
//     counted in relay_statuspage_dropped_clients_total. The last
//     RecentEvents events are kept for a new client; rate charts keep
//     RatePoints samples taken every RateEvery.
//   - Costs nothing unwatched: the snapshot is built, and the stream's
//     events are read (an ordered, ephemeral consumer on the relay's own
//     connection), only while at least one page is open. The rate samples
//     (two counters from the metrics registry) are taken always, so a page
//     opened now shows the last minutes.
package statuspage
