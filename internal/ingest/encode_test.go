package ingest

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/event"
)

func TestAppendEventMatchesJSONMarshal(t *testing.T) {
	at := time.Date(2026, 3, 4, 5, 6, 7, 891000000, time.FixedZone("x", 3600))
	for _, d := range []buildData{
		{BuildID: "b1", ImageID: "img-1", Status: statusSucceeded, ObservedBy: "webhook"},
		{BuildID: "b3", Status: statusCreated, UpdatedAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), ObservedBy: "webhook"},
		{BuildID: "b-2_x", ImageID: `needs "escaping" <&> \ é ` + "\x01\u2028", Status: statusFailed,
			CreatedAt: at, UpdatedAt: at.Add(time.Second), PreviousStatus: statusCreated, ObservedBy: "webhook"},
	} {
		for _, when := range []time.Time{at, at.Truncate(time.Second), time.Unix(0, 1).UTC()} {
			ev, err := event.New(event.KindBuild, d.BuildID, d.Status, event.BuildStatusID(d.BuildID, d.Status), when, d)
			if err != nil {
				t.Fatal(err)
			}
			want, err := json.Marshal(ev)
			if err != nil {
				t.Fatal(err)
			}
			got, err := appendEvent(nil, &ev)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("appendEvent\n got %s\nwant %s", got, want)
			}
			// The hot path encodes the data by hand too.
			if got, err = buildEvent(&d, ev.ID, when); err != nil || !bytes.Equal(got, want) {
				t.Fatalf("buildEvent (%v)\n got %s\nwant %s", err, got, want)
			}
			if got := ev.NATSSubject("cakework"); got != "cakework.build."+d.BuildID+"."+d.Status {
				t.Fatalf("subject %s", got)
			}
		}
	}
	ev, _ := event.New(event.KindBuild, "b", statusSucceeded, "id", time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), buildData{})
	if _, err := appendEvent(nil, &ev); err == nil {
		t.Fatal("year 10000 encoded")
	}
	if _, err := json.Marshal(ev); err == nil {
		t.Fatal("json.Marshal encoded year 10000; appendEvent should too")
	}
}
