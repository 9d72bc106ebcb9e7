package reliability

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/cakework-relay/cakework-relay/internal/event"
)

// Sender signs and posts webhooks as a Standard Webhooks sender does: the
// same webhook-id and body on every attempt, re-signed with the attempt's
// time.
type Sender struct {
	HC *http.Client
	wh *standardwebhooks.Webhook
}

// NewSender builds a sender with a keep-alive client for conns parallel
// connections.
func NewSender(conns int) *Sender {
	wh, err := standardwebhooks.NewWebhook(WebhookSecret)
	if err != nil {
		panic(err)
	}
	return &Sender{
		HC: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: conns, MaxIdleConns: conns}},
		wh: wh,
	}
}

// Answer is what the relay said.
type Answer struct {
	Status     int
	RetryAfter string
	Body       string
}

// Post sends one webhook.
func (s *Sender) Post(ctx context.Context, url, msgID string, body []byte) (Answer, error) {
	now := time.Now()
	sig, err := s.wh.Sign(msgID, now, body)
	if err != nil {
		return Answer{}, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return Answer{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("webhook-id", msgID)
	req.Header.Set("webhook-timestamp", strconv.FormatInt(now.Unix(), 10))
	req.Header.Set("webhook-signature", sig)
	res, err := s.HC.Do(req)
	if err != nil {
		return Answer{}, err
	}
	b, _ := io.ReadAll(io.LimitReader(res.Body, 4096))
	res.Body.Close()
	return Answer{Status: res.StatusCode, RetryAfter: res.Header.Get("Retry-After"), Body: string(b)}, nil
}

// GenericEventID is the event id the relay gives a generic webhook with
// delivery id msgID (see event.WebhookID).
func GenericEventID(msgID string, body []byte) string {
	return IDs.WebhookID(GenericReceiver, msgID, body)
}

// StreamMsg is one message read back from JetStream.
type StreamMsg struct {
	Seq   uint64
	MsgID string
	Event event.Event
}

// ReadStream reads every message of stream, in order.
func ReadStream(ctx context.Context, natsURL, stream string) ([]StreamMsg, error) {
	nc, err := nats.Connect(natsURL, nats.Timeout(5*time.Second))
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return nil, err
	}
	total := info.State.Msgs
	if total == 0 {
		return nil, nil
	}
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return nil, err
	}
	out := make([]StreamMsg, 0, total)
	read := 0 // out, and the fleet's fence messages (not events)
	for uint64(read) < total {
		batch, err := cons.FetchNoWait(min(int(total)-read, 5000))
		if err != nil {
			return nil, err
		}
		n := 0
		for m := range batch.Messages() {
			n++
			read++
			if strings.HasPrefix(m.Subject(), "relay.") {
				continue
			}
			md, _ := m.Metadata()
			ev, err := event.Decode(m.Data())
			if err != nil {
				return nil, fmt.Errorf("stream message %d: %w", md.Sequence.Stream, err)
			}
			out = append(out, StreamMsg{Seq: md.Sequence.Stream, MsgID: m.Headers().Get(nats.MsgIdHdr), Event: ev})
		}
		if batch.Error() != nil {
			return nil, batch.Error()
		}
		if n == 0 {
			if err := CtxSleep(ctx, 50*time.Millisecond); err != nil {
				return out, fmt.Errorf("read %d of %d messages: %w", read, total, err)
			}
		}
	}
	return out, nil
}

// LogLines are the lines of a log event's data.
type LogLines struct {
	VMID    string `json:"vmId"`
	BuildID string `json:"buildId"`
	Lines   []struct {
		Timestamp int64  `json:"timestamp"`
		Level     string `json:"level"`
		Message   string `json:"message"`
	} `json:"lines"`
}

// DecodeLog reads a log event's data.
func DecodeLog(ev event.Event) (LogLines, error) {
	var l LogLines
	err := json.Unmarshal(ev.Data, &l)
	return l, err
}

// Receiver is an HTTP callback target that fails a share of requests and
// records every delivery by event id (webhook-id), in arrival order per
// subject (the resource id).
type Receiver struct {
	mu        sync.Mutex
	got       map[string]int
	order     map[string][]string // subject -> event ids, first deliveries in order
	requests  int
	failed    int
	down      bool
	failEvery int // fail every n-th request (0: none)
}

// NewReceiver fails every failEvery-th request with 503 (0: never).
func NewReceiver(failEvery int) *Receiver {
	return &Receiver{got: map[string]int{}, order: map[string][]string{}, failEvery: failEvery}
}

// SetDown makes every request fail (503) until SetDown(false).
func (r *Receiver) SetDown(down bool) {
	r.mu.Lock()
	r.down = down
	r.mu.Unlock()
}

func (r *Receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	id := req.Header.Get("webhook-id")
	r.mu.Lock()
	r.requests++
	fail := r.down || (r.failEvery > 0 && r.requests%r.failEvery == 0)
	if fail {
		r.failed++
		r.mu.Unlock()
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	if r.got[id] == 0 {
		var ev struct {
			Subject string `json:"subject"`
		}
		_ = json.Unmarshal(body, &ev)
		r.order[ev.Subject] = append(r.order[ev.Subject], id)
	}
	r.got[id]++
	r.mu.Unlock()
	w.WriteHeader(http.StatusOK)
}

// Delivered is how many times event id was delivered successfully.
func (r *Receiver) Delivered(id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.got[id]
}

// Stats are the receiver's counters.
func (r *Receiver) Stats() (requests, failed, distinct, redelivered int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, n := range r.got {
		if n > 1 {
			redelivered += n - 1
		}
	}
	return r.requests, r.failed, len(r.got), redelivered
}

// Order is the first-delivery order of events about subject.
func (r *Receiver) Order(subject string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.order[subject]...)
}

// Latencies collects durations and reports percentiles.
type Latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

// Add records one duration.
func (l *Latencies) Add(d time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d)
	l.mu.Unlock()
}

// Take returns the percentiles p (0..100) of what was recorded since the
// last Take, and the count, and resets.
func (l *Latencies) Take(ps ...float64) ([]time.Duration, int) {
	l.mu.Lock()
	d := l.d
	l.d = nil
	l.mu.Unlock()
	out := make([]time.Duration, len(ps))
	if len(d) == 0 {
		return out, 0
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	for i, p := range ps {
		k := int(float64(len(d)-1) * p / 100)
		out[i] = d[k]
	}
	return out, len(d)
}
