package bus

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/nats-io/nats.go"

	"github.com/nats-io/nats-server/v2/server"
)

// The embedded server's users. Every client authenticates as one of them;
// none is anonymous.
const (
	// UserRelay is the relay's own connection: all rights, in-process only
	// (the server refuses it over TCP), with a password made anew by every
	// process.
	UserRelay = "relay"
	// UserSubscriber reads: bus.embedded.token is its password.
	UserSubscriber = "subscriber"
	// UserControl reads and steers (relay.watch.build, relay.vm.activity):
	// bus.embedded.control_token is its password.
	UserControl = "control"
)

// ControlSubjects are the request subjects that steer the relay. Only the
// relay itself and the control user may publish to them.
var ControlSubjects = []string{"relay.watch.build", "relay.unwatch.build", "relay.vm.activity"}

// newRelayPassword is the relay's own password, made anew by every
// process and kept across in-process restarts of the embedded server.
func newRelayPassword() (string, error) {
	var pw [32]byte
	if _, err := rand.Read(pw[:]); err != nil {
		return "", fmt.Errorf("bus: relay password: %w", err)
	}
	return hex.EncodeToString(pw[:]), nil
}

// embeddedUsers are the users of the embedded server: the relay (with
// relayPW), the subscriber and, with a control token, the control user.
// Every server start gets its own copies.
func embeddedUsers(o Options, relayPW string) []*server.User {
	users := []*server.User{{
		Username:               UserRelay,
		Password:               relayPW,
		AllowedConnectionTypes: map[string]struct{}{"IN_PROCESS": {}}, // jwt.ConnectionTypeInProcess,
	}}
	if o.EmbeddedToken != "" {
		users = append(users, &server.User{Username: UserSubscriber, Password: o.EmbeddedToken, Permissions: subscriberPermissions(o, false)})
	}
	if o.EmbeddedControlToken != "" {
		users = append(users, &server.User{Username: UserControl, Password: o.EmbeddedControlToken, Permissions: subscriberPermissions(o, true)})
	}
	return users
}

// subscriberPermissions: subscribe to <prefix>.> and inboxes; read the
// event stream (info, get a message); create, use and delete consumers of
// its own on it. Nothing is published into <prefix>.> or relay.dlq.>, no
// stream is created, changed, purged or deleted, and the sinks' consumers
// (o.ReservedConsumers) cannot be created, changed, pulled from, acked or
// deleted. control adds the steering subjects.
func subscriberPermissions(o Options, control bool) *server.Permissions {
	s := o.Stream
	api := "$JS.API."
	pub := []string{
		api + "INFO",
		api + "STREAM.NAMES",
		api + "STREAM.LIST",
		api + "STREAM.INFO." + s,
		api + "STREAM.MSG.GET." + s,
		api + "DIRECT.GET." + s,
		api + "DIRECT.GET." + s + ".>",
		api + "CONSUMER.CREATE." + s,
		api + "CONSUMER.CREATE." + s + ".>",
		api + "CONSUMER.DURABLE.CREATE." + s + ".*",
		api + "CONSUMER.INFO." + s + ".*",
		api + "CONSUMER.NAMES." + s,
		api + "CONSUMER.LIST." + s,
		api + "CONSUMER.MSG.NEXT." + s + ".*",
		api + "CONSUMER.DELETE." + s + ".*",
		// Acks and flow control of its own consumers (both ack formats).
		"$JS.ACK." + s + ".>",
		"$JS.ACK.*.*." + s + ".>",
		"$JS.FC." + s + ".>",
	}
	var deny []string
	for _, d := range o.ReservedConsumers {
		deny = append(deny,
			api+"CONSUMER.CREATE."+s+"."+d,
			api+"CONSUMER.CREATE."+s+"."+d+".>",
			api+"CONSUMER.DURABLE.CREATE."+s+"."+d,
			api+"CONSUMER.MSG.NEXT."+s+"."+d,
			api+"CONSUMER.DELETE."+s+"."+d,
			"$JS.ACK."+s+"."+d+".>",
			"$JS.ACK.*.*."+s+"."+d+".>",
			"$JS.FC."+s+"."+d+".>",
		)
	}
	if control {
		pub = append(pub, ControlSubjects...)
	}
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: pub, Deny: deny},
		Subscribe: &server.SubjectPermission{Allow: []string{o.SubjectPrefix + ".>", "_INBOX.>"}},
	}
}

// TokenFile is where the subscriber token is generated when
// bus.embedded.token is not set.
func TokenFile(dataDir string) string { return filepath.Join(dataDir, "nats-token") }

// CutoverFile is where Open records which stored messages predate signing.
func CutoverFile(dataDir string) string { return filepath.Join(dataDir, "bus-signing-cutover.json") }

// FromClient says whether a message on a control subject is a client's
// request: it has a reply inbox, and is not a JetStream delivery. A
// subscriber may create a push consumer whose deliver subject is a control
// subject (the server checks no permission on deliver subjects); the
// relay must not take the stream's messages it delivers there for
// requests.
func FromClient(m *nats.Msg) bool {
	return m.Reply != "" && !strings.HasPrefix(m.Reply, "$JS.") && m.Header.Get("Nats-Stream") == ""
}
