package slack

import (
	"slices"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/event"
	"github.com/cakework-relay/cakework-relay/internal/sinks"
)

// The sink's records in the state store (bucket sinks, keys
// "<sink>/<key>"):
//
//	parent/<kind>/<id>  parentRec: the parent message and the resource's facts
//	logs/build/<id>     logRing: the last TailLines log lines of an unfinished build
//	flood/<type>        pending: events folded into a summary not yet posted
//	stale/<kind>/<id>   a parent whose card misses updates (flusher refreshes it)
//
// Records untouched for recordTTL are dropped (the stream keeps events for
// 7 days by default; a thread older than that is not continued).
const (
	recordTTL       = 7 * 24 * time.Hour
	maxReplied      = 32
	maxSummaryItems = 200
)

func parentKey(kind, id string) string { return "parent/" + kind + "/" + id }
func ringKey(id string) string         { return "logs/" + event.KindBuild + "/" + id }
func floodKey(typ string) string       { return "flood/" + typ }
func staleKey(kind, id string) string  { return "stale/" + kind + "/" + id }

// parentRec is one build's or VM's parent message. TS is empty in webhook
// mode, or while no message was posted yet: then it only keeps the facts.
type parentRec struct {
	Channel string `json:"channel,omitempty"`
	TS      string `json:"ts,omitempty"`
	Facts   facts  `json:"facts"`
	// Tail is the failed build's last log lines, shown on the card.
	Tail []string `json:"tail,omitempty"`
	// Replied are the ids of recent events already posted in the thread,
	// so a retry after a failed card update doesn't post them twice.
	Replied   []string  `json:"replied,omitempty"`
	Stale     bool      `json:"stale,omitempty"`
	UpdatedAt time.Time `json:"updatedAt"`
}

func (p *parentRec) replied(id string) bool { return slices.Contains(p.Replied, id) }

func (p *parentRec) markReplied(id string) {
	if p.replied(id) {
		return
	}
	p.Replied = append(p.Replied, id)
	if len(p.Replied) > maxReplied {
		p.Replied = p.Replied[len(p.Replied)-maxReplied:]
	}
}

// logRing is the bounded tail of an unfinished build's log.
type logRing struct {
	Lines []string `json:"lines"`
	// Events are the ids of the recent log events recorded, so a
	// redelivered batch is not appended twice.
	Events    []string  `json:"events,omitempty"`
	UpdatedAt time.Time `json:"updatedAt"`
}

func (r *logRing) add(eventID string, lines []string, now time.Time) bool {
	if slices.Contains(r.Events, eventID) {
		return false
	}
	r.Events = append(r.Events, eventID)
	if len(r.Events) > 8 {
		r.Events = r.Events[len(r.Events)-8:]
	}
	r.Lines = appendTail(r.Lines, lines)
	r.UpdatedAt = now
	return true
}

func appendTail(tail, lines []string) []string {
	tail = append(tail, lines...)
	if len(tail) > TailLines {
		tail = slices.Clone(tail[len(tail)-TailLines:])
	}
	return tail
}

// pending is a summary being gathered: the events folded into it during a
// flood, kept until the summary is posted.
type pending struct {
	Type  string    `json:"type"`
	Since time.Time `json:"since"`
	// Due is when the summary is posted: the end of the window it covers.
	Due   time.Time     `json:"due"`
	Count int           `json:"count"`
	Items []pendingItem `json:"items"`
	// NextTry and Attempts back off a summary Slack refused.
	NextTry   time.Time `json:"nextTry,omitzero"`
	Attempts  int       `json:"attempts,omitempty"`
	LastError string    `json:"lastError,omitempty"`
}

type pendingItem struct {
	EventID string    `json:"eventId"`
	Subject string    `json:"subject"`
	Action  string    `json:"action"`
	Time    time.Time `json:"time"`
	Detail  string    `json:"detail,omitempty"`
}

func (p *pending) has(id string) bool {
	for _, it := range p.Items {
		if it.EventID == id {
			return true
		}
	}
	return false
}

func (p *pending) at() time.Time {
	if p.NextTry.After(p.Due) {
		return p.NextTry
	}
	return p.Due
}

// forEachSub scans one family of the sink's records ("flood", "stale").
// ForEachSink scans by "<sink>/" prefix, so "<sink>/flood" scans
// "<sink>/flood/..." and hands back the rest of the key.
func forEachSub(tx sinks.RecordTx, sink, family string, fn func(k string, raw []byte) error) error {
	return tx.ForEachSink(sink+"/"+family, fn)
}
