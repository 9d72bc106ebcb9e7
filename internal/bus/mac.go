package bus

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cakework-relay/cakework-relay/internal/event"
)

// HdrMAC is the header that marks a message as the relay's own: an
// HMAC-SHA256, keyed by the install key, over the subject, the
// Nats-Msg-Id, every Relay-* header and the body.
const HdrMAC = "Relay-Mac"

const macPrefix = "v1="

// ErrUnverified is what Verify returns for a message the relay did not
// publish (or that was changed since).
var ErrUnverified = errors.New("not published by this relay (no valid " + HdrMAC + ")")

// signer computes and checks MACs. Its states are pooled: a hash is reset
// and a buffer reused per message instead of allocated.
type signer struct {
	pool sync.Pool
	// ids derives ids from the same key (KeyedID).
	ids event.IDs
}

type macState struct {
	mac   hash.Hash
	buf   []byte
	sum   []byte
	names []string
}

func newSigner(key []byte) *signer {
	s := &signer{ids: event.KeyedIDs(key)}
	s.pool.New = func() any {
		m := hmac.New(sha256.New, key)
		return &macState{mac: m, buf: make([]byte, 0, 256), sum: make([]byte, 0, m.Size())}
	}
	return s
}

// mac computes the MAC of a message into st.sum: over length-prefixed
// fields, so no two messages share an input.
func (st *macState) compute(subject string, h nats.Header, data []byte) []byte {
	b := st.buf[:0]
	field := func(f string) {
		b = binary.AppendUvarint(b, uint64(len(f)))
		b = append(b, f...)
	}
	field("cakework-relay/v1")
	field(subject)
	field(h.Get(jetstream.MsgIDHeader))
	// Relay-* headers, by name: the dead letters' sink, error, event id...
	names := st.names[:0]
	for k := range h {
		if strings.HasPrefix(k, "Relay-") && k != HdrMAC {
			names = append(names, k)
		}
	}
	slices.Sort(names)
	for _, k := range names {
		field(k)
		vs := h[k]
		b = binary.AppendUvarint(b, uint64(len(vs)))
		for _, v := range vs {
			field(v)
		}
	}
	b = binary.AppendUvarint(b, uint64(len(data)))
	st.buf, st.names = b, names
	st.mac.Reset()
	st.mac.Write(b)
	st.mac.Write(data)
	st.sum = st.mac.Sum(st.sum[:0])
	return st.sum
}

func (s *signer) sign(msg *nats.Msg) {
	st := s.pool.Get().(*macState)
	sum := st.compute(msg.Subject, msg.Header, msg.Data)
	var enc [len(macPrefix) + 43]byte // base64 (raw) of 32 bytes
	n := copy(enc[:], macPrefix)
	base64.RawURLEncoding.Encode(enc[n:], sum)
	s.pool.Put(st)
	msg.Header[HdrMAC] = []string{string(enc[:])}
}

func (s *signer) check(subject string, h nats.Header, data []byte) bool {
	v := h.Get(HdrMAC)
	if len(v) != len(macPrefix)+43 || !strings.HasPrefix(v, macPrefix) {
		return false
	}
	var got [32]byte
	if n, err := base64.RawURLEncoding.Decode(got[:], []byte(v[len(macPrefix):])); err != nil || n != len(got) {
		return false
	}
	st := s.pool.Get().(*macState)
	defer s.pool.Put(st)
	return hmac.Equal(got[:], st.compute(subject, h, data))
}

// Verify returns nil when a message read from stream at sequence seq was
// published by this relay (this install's key), and ErrUnverified when
// not. Messages stored before the relay signed anything (up to the
// cut-over recorded at the first start that did) pass unsigned.
func (b *Bus) Verify(stream string, seq uint64, subject string, h nats.Header, data []byte) error {
	if h.Get(HdrMAC) == "" {
		if c := b.cutover.Load(); c != nil && seq != 0 && seq <= (*c)[stream] {
			return nil
		}
		return ErrUnverified
	}
	if !b.signer.Load().check(subject, h, data) {
		return ErrUnverified
	}
	return nil
}

// KeyedID derives an id from parts, keyed by the install key the bus signs
// with (event.KeyedIDs): the same parts give the same id in one install
// (and in a fleet, whose members share the key), and nobody without the
// key can compute it. Use it for a Nats-Msg-Id others must not predict,
// since a message stored first under an id makes JetStream drop the next
// one with it as a duplicate. Callers put a label of their own first in
// parts, so ids of different uses never meet.
func (b *Bus) KeyedID(parts ...string) string { return b.signer.Load().ids.ID(parts...) }

// randomKey is the key of a Bus opened without one: nothing it signs can be
// verified by another process.
func randomKey() []byte {
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return k
}

// Cutover is the last sequence of each stream stored before the relay
// signed its messages: the messages up to it pass Verify unsigned.
type Cutover map[string]uint64

// loadCutover reads the cut-over file, or records it: the streams' last
// sequences now. A fresh install records zeros, so nothing unsigned
// passes.
func (b *Bus) loadCutover(ctx context.Context) error {
	path := b.opts.CutoverFile
	if path == "" {
		c := Cutover{}
		b.cutover.Store(&c)
		return nil
	}
	if raw, err := os.ReadFile(path); err == nil {
		c := Cutover{}
		if err := json.Unmarshal(raw, &c); err != nil {
			return fmt.Errorf("bus: %s: %w (it records where signed messages begin; restore it from a backup of data_dir)", path, err)
		}
		b.cutover.Store(&c)
		return nil
	} else if !os.IsNotExist(err) {
		return fmt.Errorf("bus: %w", err)
	}
	c := Cutover{}
	for _, name := range []string{b.opts.Stream, b.DLQStream()} {
		s, err := b.js.Stream(ctx, name)
		if err != nil {
			return fmt.Errorf("bus: stream %s: %w", name, err)
		}
		c[name] = s.CachedInfo().State.LastSeq
	}
	raw, _ := json.Marshal(c)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, raw, 0o600); err != nil {
		return fmt.Errorf("bus: record the signing cut-over: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("bus: record the signing cut-over: %w", err)
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	if c[b.opts.Stream] > 0 || c[b.DLQStream()] > 0 {
		b.log.Info("bus: messages are signed from now on; the ones already stored pass unsigned", "cutover", c)
	}
	b.cutover.Store(&c)
	return nil
}
