package statuspage

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cakework-relay/cakework-relay/internal/event"
	"github.com/cakework-relay/cakework-relay/internal/httpapi"
)

// client is one open event stream.
type client struct {
	session string
	ch      chan []byte   // SSE frames, bounded
	gone    chan struct{} // closed when the hub drops the client
	once    sync.Once
}

func (c *client) drop() { c.once.Do(func() { close(c.gone) }) }

// hub fans snapshots and events out to the open streams.
type hub struct {
	p *Page

	mu      sync.Mutex
	clients map[*client]struct{}
	recent  [][]byte // the last events' frames, oldest first, bounded
	cons    jetstream.ConsumeContext
	gen     int // of cons: events of an older reader are ignored
	closed  bool

	kick chan bool // a snapshot soon; true: read the watches and DLQ again
}

func newHub(p *Page) *hub {
	return &hub{p: p, clients: map[*client]struct{}{}, kick: make(chan bool, 1)}
}

// refreshSoon asks for a snapshot now (slow: also the watches and the DLQ).
func (h *hub) refreshSoon(slow bool) {
	select {
	case h.kick <- slow:
	default:
		if slow {
			// A pending kick may be a fast one: make room for ours.
			select {
			case <-h.kick:
			default:
			}
			select {
			case h.kick <- true:
			default:
			}
		}
	}
}

// run samples the rates always and builds snapshots while a page is open.
// The watches are read at every snapshot (one bbolt read); the DLQ when its
// stream changed, after an action, or every SlowRefresh.
func (h *hub) run(ctx context.Context) {
	c := h.p.o.Clock
	nextRate := c.Now()
	var (
		slowAt  time.Time
		dlq     json.RawMessage
		dlqSeen dlqMark
	)
	for {
		now := c.Now()
		if !now.Before(nextRate) {
			h.p.rates.sample(now)
			nextRate = now.Add(h.p.o.RateEvery)
		}
		slow := false
		select {
		case <-ctx.Done():
			return
		case slow = <-h.kick:
		case <-c.After(min(h.p.o.Refresh, max(nextRate.Sub(now), time.Millisecond))):
		}
		if h.count() == 0 {
			dlq = nil
			continue
		}
		now = c.Now()
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if st, ok := h.dlqState(rctx); slow || dlq == nil || !now.Before(slowAt) || !ok || st != dlqSeen {
			dlq = h.p.adminGet(rctx, "/v1/dlq?limit="+strconv.Itoa(DLQShown))
			dlqSeen, slowAt = st, now.Add(h.p.o.SlowRefresh)
		}
		snap := map[string]any{
			"now":     now.UTC(),
			"status":  h.p.o.HTTP.Status(),
			"watches": h.p.adminGet(rctx, "/v1/watches"),
			"dlq":     dlq,
			"rates":   h.p.rates.view(),
		}
		cancel()
		b, err := json.Marshal(snap)
		if err != nil {
			h.p.log.Warn("status page: snapshot", "err", err)
			continue
		}
		h.broadcast(frame("snapshot", b))
	}
}

// dlqMark says whether the dead-letter stream changed.
type dlqMark struct {
	msgs, first, last uint64
	deleted           int
}

// dlqState is the dead-letter stream's mark: one request (the stream's
// info), to read the list again only when it changed.
func (h *hub) dlqState(ctx context.Context) (dlqMark, bool) {
	b := h.p.o.Bus
	st, err := b.JetStream().Stream(ctx, b.DLQStream())
	if err != nil {
		return dlqMark{}, false
	}
	s := st.CachedInfo().State
	return dlqMark{msgs: s.Msgs, first: s.FirstSeq, last: s.LastSeq, deleted: s.NumDeleted}, true
}

func (h *hub) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.clients)
}

// frame is one SSE message.
func frame(name string, data []byte) []byte {
	return fmt.Appendf(nil, "event: %s\ndata: %s\n\n", name, data)
}

// broadcast queues a snapshot for every client.
func (h *hub) broadcast(f []byte) {
	h.mu.Lock()
	stop := h.sendLocked(f)
	h.mu.Unlock()
	stopReader(stop)
}

// broadcastEvent queues an event of reader gen for every client and keeps
// it with the recent ones.
func (h *hub) broadcastEvent(gen int, f []byte) {
	h.mu.Lock()
	if gen != h.gen || h.cons == nil {
		h.mu.Unlock()
		return
	}
	if len(h.recent) == h.p.o.RecentEvents {
		h.recent = append(h.recent[:0], h.recent[1:]...)
	}
	h.recent = append(h.recent, f)
	stop := h.sendLocked(f)
	h.mu.Unlock()
	stopReader(stop)
}

// sendLocked queues f for every client; a client whose queue is full is
// dropped. It returns the reader to stop when no client is left.
func (h *hub) sendLocked(f []byte) jetstream.ConsumeContext {
	var stop jetstream.ConsumeContext
	for c := range h.clients {
		select {
		case c.ch <- f:
		default:
			if s := h.removeLocked(c); s != nil {
				stop = s
			}
			h.p.dropped.Inc()
			h.p.log.Info("status page: a browser fell behind; dropped (it reconnects)")
		}
	}
	return stop
}

func stopReader(cc jetstream.ConsumeContext) {
	if cc != nil {
		cc.Stop()
	}
}

// add registers a client; it gets the recent events first. It starts
// reading the stream for the first client.
func (h *hub) add(ctx context.Context, session string) (*client, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, errClosed
	}
	if len(h.clients) >= h.p.o.MaxClients {
		return nil, errTooMany
	}
	if h.cons == nil {
		if err := h.startConsumerLocked(ctx); err != nil {
			return nil, err
		}
	}
	c := &client{session: session, ch: make(chan []byte, h.p.o.ClientBuffer+len(h.recent)), gone: make(chan struct{})}
	for _, f := range h.recent {
		c.ch <- f
	}
	h.clients[c] = struct{}{}
	h.p.clientsGauge.Set(float64(len(h.clients)))
	return c, nil
}

func (h *hub) remove(c *client) {
	h.mu.Lock()
	stop := h.removeLocked(c)
	h.mu.Unlock()
	stopReader(stop)
}

// removeLocked drops c; when it was the last client it returns the reader
// to stop (outside the lock: its callback takes the lock).
func (h *hub) removeLocked(c *client) jetstream.ConsumeContext {
	if _, ok := h.clients[c]; !ok {
		return nil
	}
	delete(h.clients, c)
	c.drop()
	h.p.clientsGauge.Set(float64(len(h.clients)))
	if len(h.clients) > 0 || h.cons == nil {
		return nil
	}
	// Nobody is watching: stop reading the stream.
	stop := h.cons
	h.cons, h.recent = nil, nil
	return stop
}

// closeAll ends every stream (shutdown); no new one opens.
func (h *hub) closeAll() {
	h.mu.Lock()
	h.closed = true
	var stop jetstream.ConsumeContext
	for c := range h.clients {
		if s := h.removeLocked(c); s != nil {
			stop = s
		}
	}
	h.mu.Unlock()
	stopReader(stop)
}

var (
	errClosed  = fmt.Errorf("the relay is shutting down")
	errTooMany = fmt.Errorf("too many open status pages")
)

// startConsumerLocked reads the stream from its last RecentEvents events
// on, with an ordered consumer: ephemeral, in order, nothing to ack.
func (h *hub) startConsumerLocked(ctx context.Context) error {
	b := h.p.o.Bus
	js := b.JetStream()
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, err := js.Stream(sctx, b.Stream())
	if err != nil {
		return fmt.Errorf("stream %s: %w", b.Stream(), err)
	}
	info, err := st.Info(sctx)
	if err != nil {
		return fmt.Errorf("stream %s: %w", b.Stream(), err)
	}
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{b.SubjectPrefix() + ".>"}}
	if last := info.State.LastSeq; last > 0 {
		from := uint64(1)
		if last > uint64(h.p.o.RecentEvents) {
			from = last - uint64(h.p.o.RecentEvents) + 1
		}
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, from
	}
	oc, err := js.OrderedConsumer(sctx, b.Stream(), cfg)
	if err != nil {
		return fmt.Errorf("event reader: %w", err)
	}
	h.gen++
	gen := h.gen
	cc, err := oc.Consume(func(m jetstream.Msg) {
		var seq uint64
		if md, err := m.Metadata(); err == nil {
			seq = md.Sequence.Stream
		}
		h.broadcastEvent(gen, frame("ev", eventJSON(m.Data(), seq)))
	})
	if err != nil {
		return fmt.Errorf("event reader: %w", err)
	}
	h.cons = cc
	return nil
}

// writeWait bounds one write of the event stream.
const writeWait = 10 * time.Second

// maxSummary bounds the data shown with an event.
const maxSummary = 400

// eventJSON is what the page shows of one event: its envelope and the
// start of its data.
func eventJSON(raw []byte, seq uint64) []byte {
	out := map[string]any{"seq": seq}
	e, err := event.Decode(raw)
	if err != nil {
		out["error"] = "undecodable event: " + err.Error()
	} else {
		d := string(e.Data)
		if len(d) > maxSummary {
			d = strings.ToValidUTF8(d[:maxSummary], "") + "…"
		}
		out["id"], out["type"], out["kind"], out["subject"], out["time"], out["data"] = e.ID, e.ShortType(), e.Kind(), e.Subject, e.Time.UTC(), d
	}
	b, _ := json.Marshal(out)
	return b
}

// events is the SSE stream: the recent events, then snapshots and events
// as they come, while the session lives.
func (p *Page) events(w http.ResponseWriter, r *http.Request) {
	s, ok := p.current(r)
	if !ok {
		httpapi.WriteError(w, http.StatusUnauthorized, "not signed in (or the session expired); sign in again")
		return
	}
	c, err := p.hub.add(r.Context(), s.id)
	switch {
	case err == errTooMany:
		httpapi.WriteError(w, http.StatusServiceUnavailable, fmt.Sprintf("%s (at most %d); close one", err, p.o.MaxClients))
		return
	case err != nil:
		httpapi.WriteError(w, http.StatusServiceUnavailable, "cannot read events: "+err.Error())
		return
	}
	defer p.hub.remove(c)
	// The stream outlives the server's write timeout; each write gets its
	// own deadline, so a browser that stops reading cannot hold it.
	rc := http.NewResponseController(w)
	_ = rc.SetWriteDeadline(time.Now().Add(writeWait)) // network time, not the injected clock
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	// retry: the browser reconnects after 2 s when the stream ends.
	if _, err := fmt.Fprint(w, "retry: 2000\n\n"); err != nil {
		return
	}
	_ = rc.Flush()
	p.hub.refreshSoon(false)
	for {
		select {
		case <-r.Context().Done():
			return
		case <-c.gone:
			return
		case f := <-c.ch:
			_ = rc.SetWriteDeadline(time.Now().Add(writeWait))
			if _, ok := p.sessions.get(s.id); !ok {
				_, _ = w.Write(frame("signedout", []byte(`{"reason":"the session ended; sign in again"}`)))
				_ = rc.Flush()
				return
			}
			if _, err := w.Write(f); err != nil {
				return
			}
			// Write what is queued before flushing once.
			for n := len(c.ch); n > 0; n-- {
				if _, err := w.Write(<-c.ch); err != nil {
					return
				}
			}
			if rc.Flush() != nil {
				return
			}
		}
	}
}
