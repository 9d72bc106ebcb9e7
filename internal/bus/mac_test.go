package bus

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// An install upgraded to signing: what its stream held before passes
// unsigned (the cut-over is recorded once, at the first signing start);
// an unsigned message stored after it does not; a changed body or header
// breaks the MAC.
func TestVerifyAndTheSigningCutover(t *testing.T) {
	dir := t.TempDir()
	cut := filepath.Join(dir, "cutover.json")
	ctx := context.Background()
	open := func(cutover string, key string) *Bus {
		b, err := Open(ctx, Options{StoreDir: dir, CutoverFile: cutover, MACKey: []byte(key), DuplicateWindow: time.Minute, MaxAge: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	raw := func(b *Bus, subject, body string, h nats.Header) uint64 {
		m := nats.NewMsg(subject)
		m.Data = []byte(body)
		if h != nil {
			m.Header = h
		}
		ack, err := b.JetStream().PublishMsg(ctx, m)
		if err != nil {
			t.Fatal(err)
		}
		return ack.Sequence
	}
	get := func(b *Bus, seq uint64) *jetstream.RawStreamMsg {
		s, _ := b.JetStream().Stream(ctx, b.Stream())
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	verify := func(b *Bus, m *jetstream.RawStreamMsg) error {
		return b.Verify(b.Stream(), m.Sequence, m.Subject, m.Header, m.Data)
	}

	// Before the upgrade: an unsigned event, as the old relay stored it.
	old := open("", "k1")
	legacy := raw(old, "cakework.build.b1.created", `{"old":true}`, nil)
	old.Close(ctx)

	b := open(cut, "k1")
	if err := verify(b, get(b, legacy)); err != nil {
		t.Errorf("an event stored before signing began: %v", err)
	}
	forged := raw(b, "cakework.build.b1.succeeded", `{"imageId":"ATTACKER"}`, nil)
	if err := verify(b, get(b, forged)); !errors.Is(err, ErrUnverified) {
		t.Errorf("unsigned after the cut-over: %v", err)
	}
	ack, err := b.Publish(ctx, "cakework.build.b1.failed", "id-3", []byte(`{"real":true}`), nats.Header{"Relay-Sink": []string{"app"}})
	if err != nil {
		t.Fatal(err)
	}
	good := get(b, ack.Sequence)
	if err := verify(b, good); err != nil {
		t.Errorf("the relay's own message: %v", err)
	}
	// Copying a valid MAC onto another body, subject or Relay header fails.
	for name, h := range map[string]func(m *jetstream.RawStreamMsg){
		"body":    func(m *jetstream.RawStreamMsg) { m.Data = []byte(`{"real":false}`) },
		"subject": func(m *jetstream.RawStreamMsg) { m.Subject = "cakework.build.b2.failed" },
		"header":  func(m *jetstream.RawStreamMsg) { m.Header.Set("Relay-Sink", "other") },
	} {
		m := get(b, ack.Sequence)
		h(m)
		if err := verify(b, m); !errors.Is(err, ErrUnverified) {
			t.Errorf("MAC copied onto another %s: %v", name, err)
		}
	}
	b.Close(ctx)

	// The cut-over is kept; another key verifies nothing the first signed.
	b = open(cut, "k2")
	defer b.Close(ctx)
	if err := verify(b, get(b, legacy)); err != nil {
		t.Errorf("after a restart, the legacy event: %v", err)
	}
	if err := verify(b, get(b, forged)); err == nil {
		t.Error("after a restart, the forged event passes")
	}
	if err := verify(b, get(b, ack.Sequence)); err == nil {
		t.Error("a message signed with another install's key passes")
	}
}
