package state

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"unsafe"
)

// Outbox entry values.
//
// An entry is stored compactly: a format byte (outboxBinary), then the
// subject and the message id, each as a uvarint length and its bytes, then
// the payload as the rest of the value. Files written before this format
// hold JSON entries ({"subject","msgId","payload":<base64>}); a JSON value
// starts with '{', never with outboxBinary, so both are read.

const outboxBinary = 0x01

// encodeOutbox returns the stored value of an entry, in a new slice (bbolt
// keeps it until the commit).
func encodeOutbox(subject, msgID string, payload []byte) []byte {
	n := 1 + uvarintLen(len(subject)) + len(subject) + uvarintLen(len(msgID)) + len(msgID) + len(payload)
	v := make([]byte, 0, n)
	v = append(v, outboxBinary)
	v = binary.AppendUvarint(v, uint64(len(subject)))
	v = append(v, subject...)
	v = binary.AppendUvarint(v, uint64(len(msgID)))
	v = append(v, msgID...)
	return append(v, payload...)
}

func uvarintLen(n int) int {
	l := 1
	for ; n >= 0x80; n >>= 7 {
		l++
	}
	return l
}

var errOutboxEntry = errors.New("malformed entry")

// decodeOutbox reads a stored value into e. v must not change afterwards:
// e's strings and payload point into it.
func decodeOutbox(v []byte, e *OutboxEntry) error {
	if len(v) > 0 && v[0] == '{' {
		return json.Unmarshal(v, e)
	}
	if len(v) == 0 || v[0] != outboxBinary {
		return errOutboxEntry
	}
	v = v[1:]
	subject, v, ok := cutField(v)
	if !ok {
		return errOutboxEntry
	}
	msgID, v, ok := cutField(v)
	if !ok {
		return errOutboxEntry
	}
	e.Subject = unsafe.String(unsafe.SliceData(subject), len(subject))
	e.MsgID = unsafe.String(unsafe.SliceData(msgID), len(msgID))
	e.Payload = v[:len(v):len(v)]
	return nil
}

func cutField(v []byte) (field, rest []byte, ok bool) {
	n, w := binary.Uvarint(v)
	if w <= 0 || n > uint64(len(v)-w) {
		return nil, nil, false
	}
	return v[w : w+int(n)], v[w+int(n):], true
}
