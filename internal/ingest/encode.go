package ingest

import (
	"errors"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/event"
	"github.com/cakework-relay/cakework-relay/internal/jsonenc"
)

// appendEvent appends the JSON of e, byte for byte what json.Marshal(e)
// gives, without reflection and without compacting e.Data a second time.
// e.Data must be compact, HTML-escaped JSON as json.Marshal writes it (as
// event.New makes it; not event.NewWebhook, whose data is the sender's body).
func appendEvent(b []byte, e *event.Event) ([]byte, error) {
	if y := e.Time.Year(); y < 0 || y >= 10000 {
		return b, errors.New("event time year outside of range [0,9999]")
	}
	b = append(b, `{"specversion":`...)
	b = jsonenc.AppendString(b, e.SpecVersion)
	b = append(b, `,"id":`...)
	b = jsonenc.AppendString(b, e.ID)
	b = append(b, `,"source":`...)
	b = jsonenc.AppendString(b, e.Source)
	b = append(b, `,"type":`...)
	b = jsonenc.AppendString(b, e.Type)
	b = append(b, `,"subject":`...)
	b = jsonenc.AppendString(b, e.Subject)
	b = append(b, `,"time":"`...)
	b = e.Time.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","datacontenttype":`...)
	b = jsonenc.AppendString(b, e.DataContentType)
	b = append(b, `,"data":`...)
	if len(e.Data) == 0 {
		b = append(b, "null"...)
	} else {
		b = append(b, e.Data...)
	}
	return append(b, '}'), nil
}

// appendBuildData appends the JSON of d, byte for byte what json.Marshal(d)
// gives.
func appendBuildData(b []byte, d *buildData) ([]byte, error) {
	b = append(b, `{"buildId":`...)
	b = jsonenc.AppendString(b, d.BuildID)
	if d.ImageID != "" {
		b = append(b, `,"imageId":`...)
		b = jsonenc.AppendString(b, d.ImageID)
	}
	b = append(b, `,"status":`...)
	b = jsonenc.AppendString(b, d.Status)
	for _, f := range [...]struct {
		key string
		t   time.Time
	}{{`,"createdAt":`, d.CreatedAt}, {`,"updatedAt":`, d.UpdatedAt}} {
		if f.t.IsZero() {
			continue
		}
		var err error
		if b, err = jsonenc.AppendTime(append(b, f.key...), f.t); err != nil {
			return b, err
		}
	}
	if d.PreviousStatus != "" {
		b = append(b, `,"previousStatus":`...)
		b = jsonenc.AppendString(b, d.PreviousStatus)
	}
	b = append(b, `,"observedBy":`...)
	b = jsonenc.AppendString(b, d.ObservedBy)
	return append(b, '}'), nil
}

// buildEvent encodes the event of a build change.
func buildEvent(d *buildData, id string, at time.Time) ([]byte, error) {
	raw, err := appendBuildData(make([]byte, 0, 192), d)
	if err != nil {
		return nil, err
	}
	ev, err := event.NewJSON(event.KindBuild, d.BuildID, d.Status, id, at, raw)
	if err != nil {
		return nil, err
	}
	return appendEvent(make([]byte, 0, 256+len(raw)), &ev)
}
