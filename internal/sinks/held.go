package sinks

import (
	"cmp"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// heldSet is every message between receipt and ack or hand-back.
type heldSet struct {
	mu sync.Mutex
	m  map[*item]struct{}
}

func (h *heldSet) add(it *item) {
	h.mu.Lock()
	h.m[it] = struct{}{}
	h.mu.Unlock()
}

func (h *heldSet) remove(it *item) {
	h.mu.Lock()
	delete(h.m, it)
	h.mu.Unlock()
}

func (h *heldSet) len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.m)
}

func (h *heldSet) msgs() []jetstream.Msg {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]jetstream.Msg, 0, len(h.m))
	for it := range h.m {
		out = append(out, it.msg)
	}
	return out
}

// handBacks collects messages to return to the server. While stopping they
// are collected and naked together in stream order by flush, so the server
// queues them for redelivery in that order; after flush, at once.
type handBacks struct {
	mu      sync.Mutex
	msgs    []jetstream.Msg
	flushed bool
}

func (h *handBacks) add(m jetstream.Msg) {
	h.mu.Lock()
	if h.flushed {
		h.mu.Unlock()
		nakNow(m)
		return
	}
	h.msgs = append(h.msgs, m)
	h.mu.Unlock()
}

func (h *handBacks) flush() {
	h.mu.Lock()
	msgs := h.msgs
	h.msgs, h.flushed = nil, true
	h.mu.Unlock()
	slices.SortFunc(msgs, func(a, b jetstream.Msg) int { return cmp.Compare(streamSeq(a), streamSeq(b)) })
	for _, m := range msgs {
		nakNow(m)
	}
}

// nakNow naks with a delay: unlike a plain nak, that is written to the
// consumer's stored state as already expired, so after a restart of the
// server too (the embedded one restarts with the relay) the message is
// redelivered at once rather than after AckWait.
func nakNow(m jetstream.Msg) { _ = m.NakWithDelay(time.Millisecond) }

func streamSeq(m jetstream.Msg) uint64 {
	if md, err := m.Metadata(); err == nil {
		return md.Sequence.Stream
	}
	return 0
}
