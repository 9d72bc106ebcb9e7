package state

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
)

func TestOutboxEncodingRoundTrip(t *testing.T) {
	long := strings.Repeat("s", 300) // a two-byte length
	for _, c := range []struct {
		subject, msgID string
		payload        []byte
	}{
		{"cakework.build.b1.succeeded", "0123abcd", []byte(`{"a":1}`)},
		{long, "", nil},
		{"", long, []byte{0, 1, '{', 0xff}},
	} {
		var e OutboxEntry
		if err := decodeOutbox(encodeOutbox(c.subject, c.msgID, c.payload), &e); err != nil {
			t.Fatal(err)
		}
		if e.Subject != c.subject || e.MsgID != c.msgID || !bytes.Equal(e.Payload, c.payload) {
			t.Fatalf("got %q %q %q", e.Subject, e.MsgID, e.Payload)
		}
	}
	for _, bad := range [][]byte{nil, {0x02}, {outboxBinary}, {outboxBinary, 5, 'a'}, {outboxBinary, 1, 'a', 9}} {
		var e OutboxEntry
		if err := decodeOutbox(bad, &e); err == nil {
			t.Errorf("%q decoded", bad)
		}
	}
}

// Entries written by a relay before the binary format (JSON, payload in
// base64) are still published, in order with new ones.
func TestOutboxReadsLegacyJSONEntries(t *testing.T) {
	s := open(t, t.TempDir())
	ctx := context.Background()
	err := s.db.Update(func(btx *bolt.Tx) error {
		b := btx.Bucket(bOutbox)
		seq, _ := b.NextSequence()
		v, _ := json.Marshal(OutboxEntry{Subject: "old.subject", MsgID: "old-id", Payload: []byte(`{"old":true}`)})
		return b.Put(u64(seq), v)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Update(ctx, func(tx *Tx) error { return tx.Enqueue("new.subject", "new-id", []byte(`{"new":true}`)) }); err != nil {
		t.Fatal(err)
	}
	entries, err := s.PeekOutbox(10)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 ||
		entries[0].Subject != "old.subject" || entries[0].MsgID != "old-id" || string(entries[0].Payload) != `{"old":true}` ||
		entries[1].Subject != "new.subject" || entries[1].MsgID != "new-id" || string(entries[1].Payload) != `{"new":true}` ||
		entries[0].Seq >= entries[1].Seq {
		t.Fatalf("entries %+v", entries)
	}
	// Entries stay valid after the read transaction, and across chunks.
	big := bytes.Repeat([]byte("x"), outboxChunk/3)
	for i := 0; i < 5; i++ {
		if err := s.Update(ctx, func(tx *Tx) error { return tx.Enqueue("s", "big", big) }); err != nil {
			t.Fatal(err)
		}
	}
	entries, err = s.PeekOutbox(100)
	if err != nil || len(entries) != 7 {
		t.Fatalf("%d entries, %v", len(entries), err)
	}
	for _, e := range entries[2:] {
		if e.Subject != "s" || e.MsgID != "big" || !bytes.Equal(e.Payload, big) {
			t.Fatal("large entry garbled")
		}
	}
}
