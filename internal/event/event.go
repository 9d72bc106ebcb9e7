// Package event defines the one CloudEvents 1.0 envelope the relay emits, the
// rules that make event ids deterministic, and the mapping from event types to
// NATS subjects. Every producer (ingest, poller, auto-stop) builds events here
// so that the same change seen twice gets the same id, and JetStream's
// Nats-Msg-Id dedup drops the repeat.
package event

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"strings"
	"sync"
	"time"
)

// TypePrefix is dropped from types to make the short form used in filters.
const TypePrefix = "com.cakework."

// Source is the CloudEvents source of every event the relay emits.
const Source = "cakework-relay"

// Resource kinds, the second token of a subject.
const (
	KindBuild         = "build"
	KindVM            = "vm"
	KindFunctionBuild = "function_build"
	KindWebhook       = "webhook"
)

// Event is a CloudEvents 1.0 event in structured JSON mode.
type Event struct {
	SpecVersion     string          `json:"specversion"`
	ID              string          `json:"id"`
	Source          string          `json:"source"`
	Type            string          `json:"type"`
	Subject         string          `json:"subject"`
	Time            time.Time       `json:"time"`
	DataContentType string          `json:"datacontenttype"`
	Data            json.RawMessage `json:"data"`
}

// ValidToken reports whether s is safe as a resource id or state: it can sit
// in a NATS subject as one token.
// It is the pattern ^[A-Za-z0-9_-]{1,128}$, checked without a regexp (it is
// on the webhook hot path).
func ValidToken(s string) bool {
	if len(s) == 0 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// ErrBadToken is wrapped by errors about ids or states that fail ValidToken.
var ErrBadToken = errors.New("must be 1-128 characters of A-Z, a-z, 0-9, _ or -")

// CheckToken returns a descriptive error when s is not a valid token.
func CheckToken(what, s string) error {
	if ValidToken(s) {
		return nil
	}
	if len(s) > 40 {
		s = s[:40] + "..."
	}
	return fmt.Errorf("%s %q: %w", what, s, ErrBadToken)
}

// New builds an event about a resource. kind is one of the Kind constants,
// action the last part of the type (a state, "log", "idle"...). id is the
// deterministic event id (see ID). The data value is marshalled as JSON.
func New(kind, resourceID, action, id string, at time.Time, data any) (Event, error) {
	if err := CheckToken(kind+" id", resourceID); err != nil {
		return Event{}, err
	}
	if err := CheckToken(kind+" "+"event action", action); err != nil {
		return Event{}, err
	}
	raw, err := json.Marshal(data)
	if err != nil {
		return Event{}, fmt.Errorf("encode %s.%s data: %w", kind, action, err)
	}
	return newEvent(kind, resourceID, action, id, at, raw), nil
}

// NewJSON is New with the data already encoded: compact JSON, HTML-escaped,
// as json.Marshal writes it.
func NewJSON(kind, resourceID, action, id string, at time.Time, raw json.RawMessage) (Event, error) {
	if err := CheckToken(kind+" id", resourceID); err != nil {
		return Event{}, err
	}
	if err := CheckToken(kind+" "+"event action", action); err != nil {
		return Event{}, err
	}
	return newEvent(kind, resourceID, action, id, at, raw), nil
}

func newEvent(kind, resourceID, action, id string, at time.Time, raw json.RawMessage) Event {
	return Event{
		SpecVersion:     "1.0",
		ID:              id,
		Source:          Source,
		Type:            TypePrefix + kind + "." + action,
		Subject:         resourceID,
		Time:            at.UTC(),
		DataContentType: "application/json",
		Data:            raw,
	}
}

// NewWebhook builds the event for a generic webhook receiver.
func NewWebhook(name, id string, at time.Time, body json.RawMessage) (Event, error) {
	if err := CheckToken("webhook receiver name", name); err != nil {
		return Event{}, err
	}
	// The receiver's name is both the subject and the type's action.
	return newEvent(KindWebhook, name, name, id, at, body), nil
}

// ShortType drops the com.cakework. prefix: "build.failed".
func (e Event) ShortType() string { return strings.TrimPrefix(e.Type, TypePrefix) }

// Kind is the resource kind of the event ("build", "vm", ...).
func (e Event) Kind() string {
	k, _, _ := strings.Cut(e.ShortType(), ".")
	return k
}

// Action is the last part of the type ("succeeded", "log", ...).
func (e Event) Action() string {
	_, a, _ := strings.Cut(e.ShortType(), ".")
	return a
}

// NATSSubject maps the event to its subject under prefix:
// <prefix>.<kind>.<id>.<action>, or <prefix>.webhook.<name> for webhooks.
func (e Event) NATSSubject(prefix string) string {
	kind, action := e.Kind(), e.Action()
	if kind == KindWebhook {
		return prefix + "." + KindWebhook + "." + action
	}
	return prefix + "." + kind + "." + e.Subject + "." + action
}

// OrderKey names the resource an event is about. Sinks deliver events with
// the same key in order.
func (e Event) OrderKey() string { return e.Kind() + "/" + e.Subject }

// Validate checks an event decoded from outside (the bus, a replay).
func (e Event) Validate() error {
	var errs []error
	if e.SpecVersion != "1.0" {
		errs = append(errs, fmt.Errorf("specversion %q: want 1.0", e.SpecVersion))
	}
	if e.ID == "" {
		errs = append(errs, errors.New("id is empty"))
	}
	if !strings.HasPrefix(e.Type, TypePrefix) {
		errs = append(errs, fmt.Errorf("type %q: want prefix %s", e.Type, TypePrefix))
	}
	if !ValidToken(e.Subject) {
		errs = append(errs, CheckToken("subject", e.Subject))
	}
	return errors.Join(errs...)
}

// Decode parses and validates a JSON event.
func Decode(b []byte) (Event, error) {
	var e Event
	if err := json.Unmarshal(b, &e); err != nil {
		return Event{}, fmt.Errorf("decode event: %w", err)
	}
	if err := e.Validate(); err != nil {
		return Event{}, fmt.Errorf("decode event: %w", err)
	}
	return e, nil
}

// IDs derives event ids. The zero value is the legacy scheme: SHA-256 of
// the parts, which anyone can compute. KeyedIDs uses an HMAC keyed by the
// install's secret: the same change still gets the same id in one install
// (across webhook and poller, restarts, and the relays of one fleet that
// share the key), but nobody without the key can predict the id of a
// coming change (and pre-publish it so that JetStream's dedup drops the
// genuine one).
type IDs struct {
	pool *sync.Pool // of keyed HMACs; nil: legacy
}

// KeyedIDs is the keyed scheme with key.
func KeyedIDs(key []byte) IDs {
	key = append([]byte(nil), key...)
	return IDs{pool: &sync.Pool{New: func() any { return hmac.New(sha256.New, key) }}}
}

// Keyed says whether ids are keyed.
func (g IDs) Keyed() bool { return g.pool != nil }

// ID derives a deterministic event id from the parts that identify one
// change. The same parts always give the same id; parts are length-prefixed
// so ("ab","c") and ("a","bc") differ.
func (g IDs) ID(parts ...string) string {
	// The bytes hashed are fmt's "%d:%s;" per part, appended by hand.
	n := 0
	for _, p := range parts {
		n += len(p) + 24
	}
	b := make([]byte, 0, n)
	for _, p := range parts {
		b = strconv.AppendInt(b, int64(len(p)), 10)
		b = append(b, ':')
		b = append(b, p...)
		b = append(b, ';')
	}
	var sum [sha256.Size]byte
	if g.pool == nil {
		sum = sha256.Sum256(b)
	} else {
		m := g.pool.Get().(hash.Hash)
		m.Reset()
		m.Write(b)
		m.Sum(sum[:0])
		g.pool.Put(m)
	}
	return hex.EncodeToString(sum[:16])
}

// ID is the legacy (unkeyed) id of parts.
func ID(parts ...string) string { return IDs{}.ID(parts...) }

// The id rules. Each names the facts that make a change the same change,
// whoever observed it. The package-level functions are the legacy scheme.

// BuildStatusID: a build reaches each status once, so the build id and the
// status identify the change. A webhook and a poll of the same success give
// the same id.
func (g IDs) BuildStatusID(buildID, status string) string { return g.ID(KindBuild, buildID, status) }

// VMStateID: a VM can return to a state (cached VMs start and stop again), so
// the upstream updatedAt tells the visits apart.
func (g IDs) VMStateID(vmID, state string, updatedAt time.Time) string {
	return g.ID(KindVM, vmID, state, updatedAt.UTC().Format(time.RFC3339Nano))
}

// LogBatchID: a log batch is identified by where it starts in the stream:
// the timestamp of its first line and how many lines at that millisecond came
// before it.
func (g IDs) LogBatchID(kind, resourceID string, firstTimestampMs int64, skipAtFirst int) string {
	return g.ID(kind, resourceID, "log", fmt.Sprint(firstTimestampMs), fmt.Sprint(skipAtFirst))
}

// WebhookID: a generic webhook is identified by the sender's delivery id
// (webhook-id or the like) when there is one, else by its body.
func (g IDs) WebhookID(receiver, deliveryID string, body []byte) string {
	if deliveryID != "" {
		return g.ID(KindWebhook, receiver, "delivery", deliveryID)
	}
	sum := sha256.Sum256(body)
	return g.ID(KindWebhook, receiver, "body", hex.EncodeToString(sum[:]))
}

// AutostopID: one warning and one stop per idle period, which starts at the
// VM's last activity.
func (g IDs) AutostopID(vmID, action string, idleSince time.Time) string {
	return g.ID(KindVM, vmID, action, idleSince.UTC().Format(time.RFC3339Nano))
}

// BuildStatusID is IDs.BuildStatusID in the legacy scheme.
func BuildStatusID(buildID, status string) string { return IDs{}.BuildStatusID(buildID, status) }

// VMStateID is IDs.VMStateID in the legacy scheme.
func VMStateID(vmID, state string, updatedAt time.Time) string {
	return IDs{}.VMStateID(vmID, state, updatedAt)
}

// LogBatchID is IDs.LogBatchID in the legacy scheme.
func LogBatchID(kind, resourceID string, firstTimestampMs int64, skipAtFirst int) string {
	return IDs{}.LogBatchID(kind, resourceID, firstTimestampMs, skipAtFirst)
}

// WebhookID is IDs.WebhookID in the legacy scheme.
func WebhookID(receiver, deliveryID string, body []byte) string {
	return IDs{}.WebhookID(receiver, deliveryID, body)
}

// AutostopID is IDs.AutostopID in the legacy scheme.
func AutostopID(vmID, action string, idleSince time.Time) string {
	return IDs{}.AutostopID(vmID, action, idleSince)
}
