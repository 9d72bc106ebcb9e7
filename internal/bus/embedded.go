package bus

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// embedded is the embedded nats-server behind the relay's in-process
// connection. nats.go asks its InProcessConnProvider for a new connection
// at every reconnect, so the server can be replaced under a running
// relay (restartEmbedded): the connection reconnects to the new one, sends
// its subscriptions again, and the JetStream pull iterators issue new pull
// requests. The current server is read atomically by everything that
// looks at it (Ready, ClientURL, the stream syncer, Close).
type embedded struct {
	cur atomic.Pointer[server.Server] // nil while none runs
	// mu orders install against close: a server a restart finishes
	// starting after Close is shut down, never left running.
	mu     sync.Mutex
	closed bool

	relayPW string
	// host and port are what every start listens on: port is the one the
	// first start got when bus.embedded.listen asked for 0, so TCP clients
	// reconnect to the same address. port < 0: in-process only.
	host      string
	port      int
	clientURL string
}

// errRestarting is what a reconnect gets while no server runs.
var errRestarting = errors.New("bus: the embedded NATS server is restarting")

// errClosed is what a restart gets once Close has begun: the server it
// started is shut down.
var errClosed = errors.New("bus: closed during a restart of the embedded NATS server")

// install makes srv the current server, unless the bus is closing: then
// srv is shut down (in the background: Close does not wait for it) and
// errClosed returned.
func (e *embedded) install(srv *server.Server) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		go srv.Shutdown()
		return errClosed
	}
	e.cur.Store(srv)
	return nil
}

// close marks the bus closing and takes the current server (nil if a
// restart has none): no server is installed after it.
func (e *embedded) close() *server.Server {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.closed = true
	return e.cur.Swap(nil)
}

// InProcessConn is nats.InProcessConnProvider: a connection to the
// current server.
func (e *embedded) InProcessConn() (net.Conn, error) {
	srv := e.cur.Load()
	if srv == nil {
		return nil, errRestarting
	}
	return srv.InProcessConn()
}

// server is the running embedded server: nil with an external NATS, or
// while a restart has none.
func (b *Bus) server() *server.Server {
	if b.emb == nil {
		return nil
	}
	return b.emb.cur.Load()
}

func (b *Bus) startEmbedded(ctx context.Context) error {
	if b.opts.StoreDir == "" {
		return errors.New("bus: embedded server needs a store directory (data_dir)")
	}
	e := &embedded{port: -1}
	if b.opts.EmbeddedListen != "" {
		host, portStr, err := net.SplitHostPort(b.opts.EmbeddedListen)
		if err != nil {
			return fmt.Errorf("bus.embedded.listen %q: %w (use host:port, or \"\" for in-process only)", b.opts.EmbeddedListen, err)
		}
		port, err := strconv.Atoi(portStr)
		if err != nil || port < 0 {
			return fmt.Errorf("bus.embedded.listen %q: bad port", b.opts.EmbeddedListen)
		}
		// The server only reports a busy port by timing out; probe first so
		// the error is immediate and says what to change.
		if port != 0 {
			ln, err := net.Listen("tcp", b.opts.EmbeddedListen)
			if err != nil {
				return fmt.Errorf("bus: embedded NATS cannot listen on %s: %w (is the port in use? set bus.embedded.listen to a free address, or \"\" for in-process only)", b.opts.EmbeddedListen, err)
			}
			ln.Close()
		}
		e.host, e.port = host, port
	}
	// No anonymous client: the relay's own in-process user, the
	// subscriber and the control user (auth.go).
	pw, err := newRelayPassword()
	if err != nil {
		return err
	}
	e.relayPW, b.relayPW = pw, pw
	b.emb = e
	srv, err := b.newServer(ctx, true, true)
	if err != nil {
		return err
	}
	e.cur.Store(srv)
	if e.port >= 0 {
		if a, ok := srv.Addr().(*net.TCPAddr); ok {
			e.port = a.Port
		}
		e.clientURL = srv.ClientURL()
	}
	// Its own inbox prefix: subscribers may subscribe to _INBOX.>, and
	// need not see the relay's replies.
	nc, err := nats.Connect("", nats.InProcessServer(e), nats.Name("cakework-relay"), nats.MaxReconnects(-1),
		nats.UserInfo(UserRelay, pw), nats.CustomInboxPrefix("_RELAY_INBOX"))
	if err != nil {
		return fmt.Errorf("bus: connect to embedded NATS: %w", err)
	}
	b.nc = nc
	return nil
}

// embeddedMaxMemory is the embedded JetStream's limit for memory storage,
// which none of the relay's streams use.
const embeddedMaxMemory = 64 << 20

// newServer starts an embedded server on the store directory, with the
// users and the address of b.emb, and waits until it takes connections,
// at most ReadyTimeout, and not past ctx: a start ctx abandons is shut
// down (in the background, so a slow start does not hold the caller).
// withJS false starts one without JetStream (core NATS only); listen false
// one for in-process connections only, whatever bus.embedded.listen says.
func (b *Bus) newServer(ctx context.Context, withJS, listen bool) (*server.Server, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("bus: embedded NATS not started: %w", err)
	}
	e := b.emb
	o := &server.Options{
		ServerName: "cakework-relay",
		JetStream:  withJS,
		StoreDir:   b.opts.StoreDir,
		NoSigs:     true,
		// The relay's own server holds at most a few sinks' consumers; keep
		// its footprint small.
		MaxPayload: 8 << 20,
		Users:      embeddedUsers(b.opts, e.relayPW),
	}
	// By default nats-server caps its store at 75% of the disk's free
	// space when it starts: started (or restarted after a full disk) with
	// little room, it refuses every write for good, however much room
	// comes back. Capped at the filesystem's size instead, it stores until
	// a write really fails (JetStream then turns off, and watchStorage
	// restarts it once there is room). Both limits must be set, or it
	// sizes both itself; no stream of the relay's is in memory.
	if fs := filesystemSize(b.opts.StoreDir); fs > 0 {
		o.JetStreamMaxStore, o.JetStreamMaxMemory = fs, embeddedMaxMemory
	}
	if e.port < 0 || !listen {
		o.DontListen = true
	} else {
		o.Host, o.Port = e.host, e.port
		if e.port == 0 {
			o.Port = server.RANDOM_PORT
		}
	}
	srv, err := server.NewServer(o)
	if err != nil {
		return nil, fmt.Errorf("bus: embedded NATS: %w", err)
	}
	fatal := make(chan string, 1)
	srv.SetLoggerV2(&natsLogger{log: b.log, fatal: fatal}, false, false, false)
	go srv.Start()
	// A start that fails (JetStream cannot open its store, the port is
	// taken) is logged as fatal and never gets ready: stop waiting then.
	ready := make(chan bool, 1)
	go func() { ready <- srv.ReadyForConnections(b.opts.ReadyTimeout) }()
	var why string
	select {
	case ok := <-ready:
		if ok {
			return srv, nil
		}
	case why = <-fatal:
	case <-ctx.Done():
		go func() { srv.Shutdown(); srv.WaitForShutdown() }()
		return nil, fmt.Errorf("bus: embedded NATS start abandoned: %w", ctx.Err())
	}
	srv.Shutdown()
	srv.WaitForShutdown()
	if why != "" {
		why = " (" + why + ")"
	}
	if e.port >= 0 && listen {
		return nil, fmt.Errorf("bus: embedded NATS did not start on %s%s: is the port in use? set bus.embedded.listen to a free address, or \"\" for in-process only; or check the data_dir's jetstream directory is writable", net.JoinHostPort(e.host, strconv.Itoa(e.port)), why)
	}
	return nil, fmt.Errorf("bus: embedded NATS did not start%s; check the data_dir's jetstream directory is writable", why)
}

// restartEmbedded replaces the embedded server with a new one on the same
// store, users and address: its JetStream starts afresh, which nats-server
// cannot do safely in a running server (storage.go); if the address was
// taken meanwhile, in-process only (inProcessOnly). The relay's connection is reconnected at
// once (checkStorage then ensures the streams). If the new server does not start, one
// without JetStream is put back, so the relay's control subjects and TCP
// subscribers keep working as before, and the error is returned.
//
// ctx ends when Close begins (watchStorage): the restart is then
// abandoned, whatever step it is at; a start under way is shut down, and
// no server is installed once Close has taken the current one
// (embedded.install), so Close is bounded by its own deadline and leaves
// no server running.
func (b *Bus) restartEmbedded(ctx context.Context) error {
	if old := b.emb.cur.Swap(nil); old != nil {
		old.Shutdown()
		old.WaitForShutdown()
	}
	srv, err := b.newServer(ctx, true, true)
	switch {
	case err == nil:
		b.listenLost.Store(nil)
	case ctx.Err() != nil:
		return err
	case b.emb.port >= 0:
		srv, err = b.inProcessOnly(ctx, err)
	}
	if err != nil {
		if ctx.Err() != nil {
			return err
		}
		fb, ferr := b.newServer(ctx, false, true)
		if ferr != nil && b.emb.port >= 0 && ctx.Err() == nil { // the address taken too: in-process
			fb, ferr = b.newServer(ctx, false, false)
		}
		if ferr != nil {
			return fmt.Errorf("%w; a server without JetStream did not start either: %v", err, ferr)
		}
		if ierr := b.emb.install(fb); ierr != nil {
			return fmt.Errorf("%w; %v", err, ierr)
		}
		if rerr := b.reconnect(ctx); rerr != nil {
			return fmt.Errorf("%w; %v", err, rerr)
		}
		return err
	}
	if err := b.emb.install(srv); err != nil {
		return err
	}
	b.restarts.Add(1)
	return b.reconnect(ctx)
}

// inProcessOnly starts the restarted server for in-process connections
// only, after one on bus.embedded.listen did not start (why): another
// process may have taken the address while the old server was down. The
// relay keeps working; TCP subscribers cannot connect (and should not
// talk to whoever holds the address), and Ready says so until the relay
// is restarted.
func (b *Bus) inProcessOnly(ctx context.Context, why error) (*server.Server, error) {
	srv, err := b.newServer(ctx, true, false)
	if err != nil {
		return nil, fmt.Errorf("%w; in-process only, it did not start either: %v", why, err)
	}
	msg := fmt.Sprintf("bus: the embedded NATS server restarted for in-process connections only: %v; TCP subscribers cannot connect, and whatever holds %s now is not the relay (do not give it credentials); restart the relay once the address is free",
		why, net.JoinHostPort(b.emb.host, strconv.Itoa(b.emb.port)))
	b.listenLost.Store(&msg)
	b.log.Error(msg)
	return srv, nil
}

// reconnect makes the relay's connection reconnect now (nats.go would wait
// its ReconnectWait first) and waits until it did, at most ReadyTimeout.
func (b *Bus) reconnect(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, b.opts.ReadyTimeout)
	defer cancel()
	ch := b.nc.StatusChanged(nats.CONNECTED)
	defer b.nc.RemoveStatusListener(ch)
	if err := b.nc.ForceReconnect(); err != nil {
		return fmt.Errorf("bus: reconnect to the embedded NATS server: %w", err)
	}
	for b.nc.Status() != nats.CONNECTED {
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("bus: the relay's connection did not reconnect to the restarted embedded NATS server: %w", ctx.Err())
		}
	}
	return nil
}

// EmbeddedRestarts counts the in-process restarts of the embedded server
// that started JetStream again after it had turned itself off.
func (b *Bus) EmbeddedRestarts() uint64 { return b.restarts.Load() }
