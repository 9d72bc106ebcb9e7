package ingest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/cakework"
	"github.com/cakework-relay/cakework-relay/internal/event"
	"github.com/cakework-relay/cakework-relay/internal/state"
)

const (
	statusCreated   = cakework.BuildCreated
	statusSucceeded = cakework.BuildSucceeded
	statusFailed    = cakework.BuildFailed
)

// buildFields are the build keys a Cakework webhook may carry: the bare
// success {"buildId","imageId"}, the failure {"buildId"} or
// {"buildId","status":"failed"}, or the getBuild shape.
type buildFields struct {
	BuildID   string   `json:"buildId"`
	ImageID   string   `json:"imageId"`
	Status    string   `json:"status"`
	CreatedAt flexTime `json:"createdAt"`
	UpdatedAt flexTime `json:"updatedAt"`
}

// buildBody adds the typed envelope: {"type":"build.succeeded", ...} with
// the build either at the top level or under "data".
type buildBody struct {
	buildFields
	Type string       `json:"type"`
	Data *buildFields `json:"data"`
}

// flexTime is a timestamp in any of the API's forms: a string in one of the
// five layouts, or a number of unix milliseconds.
type flexTime time.Time

func (t *flexTime) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil
	}
	var s string
	if len(b) > 0 && b[0] == '"' {
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		if s == "" {
			return nil
		}
	} else {
		s = string(b)
	}
	v, err := cakework.ParseTime(s)
	if err != nil {
		return err
	}
	*t = flexTime(v)
	return nil
}

// buildData is the event's data: the build normalized, plus what the relay
// knows about the change.
type buildData struct {
	BuildID        string    `json:"buildId"`
	ImageID        string    `json:"imageId,omitempty"`
	Status         string    `json:"status"`
	CreatedAt      time.Time `json:"createdAt,omitzero"`
	UpdatedAt      time.Time `json:"updatedAt,omitzero"`
	PreviousStatus string    `json:"previousStatus,omitempty"`
	ObservedBy     string    `json:"observedBy"`
}

// parseBuild reads a Cakework build webhook. pathStatus is the status the
// URL gave (/build/succeeded, /build/failed), or "".
func parseBuild(body []byte, pathStatus string) (buildData, error) {
	var in buildBody
	if err := json.Unmarshal(body, &in); err != nil {
		return buildData{}, fmt.Errorf("the body is not a valid Cakework build webhook (a JSON object with buildId): %s", jsonErr(err))
	}
	f := in.buildFields
	if in.Data != nil {
		// Enveloped: the build is under data; top-level keys fill gaps.
		d := *in.Data
		if d.BuildID == "" {
			d.BuildID = f.BuildID
		}
		if d.ImageID == "" {
			d.ImageID = f.ImageID
		}
		if d.Status == "" {
			d.Status = f.Status
		}
		if time.Time(d.CreatedAt).IsZero() {
			d.CreatedAt = f.CreatedAt
		}
		if time.Time(d.UpdatedAt).IsZero() {
			d.UpdatedAt = f.UpdatedAt
		}
		f = d
	}
	if f.BuildID == "" {
		return buildData{}, errors.New("buildId is missing; send {\"buildId\": \"...\"}")
	}
	if err := event.CheckToken("buildId", f.BuildID); err != nil {
		return buildData{}, err
	}
	status, err := buildStatus(in.Type, f, pathStatus)
	if err != nil {
		return buildData{}, err
	}
	return buildData{
		BuildID:    f.BuildID,
		ImageID:    f.ImageID,
		Status:     status,
		CreatedAt:  time.Time(f.CreatedAt),
		UpdatedAt:  time.Time(f.UpdatedAt),
		ObservedBy: "webhook",
	}, nil
}

// buildStatus decides the status: the path, the type and the status key
// must agree when more than one is given; with none, an imageId means
// success (the bare success shape).
func buildStatus(typ string, f buildFields, pathStatus string) (string, error) {
	var fromType string
	if typ != "" {
		short := strings.TrimPrefix(typ, event.TypePrefix)
		s, ok := strings.CutPrefix(short, "build.")
		if !ok {
			return "", fmt.Errorf("type %q is not a build webhook; the Cakework receiver takes build.succeeded, build.failed or build.created", clip(typ))
		}
		fromType = s
	}
	status := pathStatus
	for _, s := range [...]struct{ what, v string }{{"type", fromType}, {"status", f.Status}} {
		switch {
		case s.v == "":
		case status == "":
			status = s.v
		case s.v != status:
			src := "the URL path"
			if pathStatus == "" {
				src = "type"
			}
			return "", fmt.Errorf("%s says %q but %s says %q; send one status", s.what, clip(s.v), src, status)
		}
	}
	if status == "" {
		if f.ImageID == "" {
			return "", errors.New("cannot tell the build status: send status or type, or imageId for a success, or post to /webhooks/cakework/build/failed")
		}
		status = statusSucceeded
	}
	switch status {
	case statusSucceeded, statusFailed, statusCreated:
		return status, nil
	}
	return "", fmt.Errorf("unknown build status %q; want created, succeeded or failed", clip(status))
}

// cakeworkBuild commits a build webhook: dedup, the poller watch and the
// event, in one transaction. Every write here has a sequential key (the seen
// index, the watch queue, the outbox), so concurrent webhooks share commits
// without dirtying B+tree leaves at random places. The build's state record
// is the poller's: it confirms the status with getBuild on its next tick,
// records it, and its event carries the same id, which JetStream drops.
func (in *Ingest) cakeworkBuild(ctx context.Context, body []byte, pathStatus, deliveryID string, now time.Time) answer {
	b, err := parseBuild(body, pathStatus)
	if err != nil {
		return fail(http.StatusBadRequest, outBadRequest, err.Error())
	}
	id := in.o.IDs.BuildStatusID(b.BuildID, b.Status)
	at := b.UpdatedAt
	if at.IsZero() {
		at = now
	}
	// The change is remembered under the event id, and under the sender's
	// delivery id when it gave one: a retry with the same delivery id, and
	// the same change sent again under another, are both duplicates.
	deliveryKey := ""
	if deliveryID != "" {
		deliveryKey = seenKeyFor(deliveryID, id)
	}
	expires := now.Add(in.seenTTL)
	watchRaw, err := state.EncodeQueuedWatch(state.KindBuild, b.BuildID, state.Watch{Source: "webhook", AddedAt: now})
	if err != nil {
		return fail(http.StatusBadRequest, outBadRequest, err.Error())
	}
	// What the poller recorded of the build, read before the journal
	// batch: a poller commit that races this request announces the same
	// change under the same event id, which JetStream drops.
	prev, known, bad, err := in.store.BuildRecord(b.BuildID)
	if err != nil {
		return in.unavailable(err)
	}
	if bad != nil {
		in.log.Warn("unreadable build state ignored", "build", b.BuildID, "err", bad)
		prev, known = state.BuildState{}, false
	}
	if known && prev.Status == b.Status {
		// Already announced by the poller, under the same id.
		return answer{status: http.StatusOK, outcome: outDuplicate, id: id}
	}
	if known && prev.Finished() && b.Status == statusCreated {
		// A late "created" for a finished build: its created event may
		// never have been published, so no id is claimed.
		return answer{status: http.StatusOK, outcome: outDuplicate}
	}
	// Build the event outside the journal batch (it runs on the store's
	// single goroutine). It says what the status was before, when known.
	if known {
		b.PreviousStatus = prev.Status
	}
	payload, err := buildEvent(&b, id, at)
	if err != nil {
		return fail(http.StatusBadRequest, outBadRequest, err.Error())
	}
	// As event.NATSSubject gives it; buildEvent checked both tokens.
	subject := in.prefix + "." + event.KindBuild + "." + b.BuildID + "." + b.Status
	if in.o.Fleet != nil {
		fctx, cancel := context.WithTimeout(ctx, fleetDeadline)
		defer cancel()
		return in.fleetBuild(fctx, &b, id, deliveryKey, subject, payload)
	}
	// A duplicate is answered with the id of the event published for
	// the change: for a repeated delivery id, the event of its first
	// delivery (whose body may differ from this one's), or none when that
	// is not known (an id remembered before events were kept with it).
	var res struct {
		dup   bool
		dupID string
	}
	err = in.store.Accept(ctx, func(tx *state.AcceptTx) error {
		res.dup, res.dupID = true, id
		if deliveryKey != "" {
			if first, seen := tx.WebhookEvent(CakeworkReceiver, deliveryKey, now); seen {
				res.dupID = first
				return nil
			}
		}
		if tx.ChangeAnnounced(id, now) {
			return nil
		}
		if b.Status == statusCreated && in.finishedByWebhook(tx, b.BuildID, now) {
			res.dupID = "" // nothing was published under the created id
			return nil
		}
		res.dup = false
		if err := tx.MarkChangeAnnounced(id, now, expires); err != nil {
			return err
		}
		if deliveryKey != "" {
			if _, err := tx.SeenWebhookEvent(CakeworkReceiver, deliveryKey, id, now, expires); err != nil {
				return err
			}
		}
		if in.o.WatchBuilds {
			if m := in.o.MaxQueuedWatches; m > 0 && in.store.QueuedWatches() >= m {
				in.metrics.watchesNotQueued.Inc()
			} else if err := tx.QueueWatch(watchRaw); err != nil {
				return err
			}
		}
		return tx.Enqueue(subject, id, payload)
	})
	if err != nil {
		return in.commitErr(ctx, err)
	}
	if res.dup {
		return answer{status: http.StatusOK, outcome: outDuplicate, id: res.dupID}
	}
	return answer{status: http.StatusAccepted, outcome: outAccepted, id: id}
}

// finishedByWebhook reports whether a final status of the build came in by
// webhook recently (before the poller recorded it).
func (in *Ingest) finishedByWebhook(tx *state.AcceptTx, buildID string, now time.Time) bool {
	for _, st := range []string{statusSucceeded, statusFailed} {
		if tx.ChangeAnnounced(in.o.IDs.BuildStatusID(buildID, st), now) {
			return true
		}
	}
	return false
}

// seenKeyFor is the dedup key: the sender's delivery id when it gave one,
// else the event id. The prefixes keep the two apart.
func seenKeyFor(deliveryID, eventID string) string {
	if deliveryID != "" {
		return "d:" + deliveryID
	}
	return "e:" + eventID
}

// jsonErr trims encoding/json's Go-specific wording.
func jsonErr(err error) string {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("invalid JSON at byte %d: %s", se.Offset, se.Error())
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		if te.Field != "" {
			return fmt.Sprintf("%s must be a %s, not a %s", te.Field, jsonKind(te.Type.Kind().String()), te.Value)
		}
		return fmt.Sprintf("want a JSON object, not a %s", te.Value)
	}
	return err.Error()
}

func jsonKind(k string) string {
	switch k {
	case "string":
		return "string"
	case "struct", "ptr":
		return "object"
	}
	return k
}

// genericWebhook commits a generic receiver's webhook.
func (in *Ingest) genericWebhook(ctx context.Context, rc *receiver, body []byte, deliveryID string, now time.Time) answer {
	if !json.Valid(body) {
		return fail(http.StatusBadRequest, outBadRequest, "the body is not valid JSON")
	}
	body = bytes.TrimSpace(body)
	id := in.o.IDs.WebhookID(rc.name, deliveryID, body)
	ev, err := event.NewWebhook(rc.name, id, now, body)
	if err != nil {
		return fail(http.StatusBadRequest, outBadRequest, err.Error())
	}
	payload, err := json.Marshal(ev)
	if err != nil {
		return fail(http.StatusBadRequest, outBadRequest, err.Error())
	}
	subject := ev.NATSSubject(in.prefix)
	seenKey := seenKeyFor(deliveryID, id)
	if in.o.Fleet != nil {
		fctx, cancel := context.WithTimeout(ctx, fleetDeadline)
		defer cancel()
		return in.fleetGeneric(fctx, rc, id, seenKey, subject, payload)
	}
	expires := now.Add(in.seenTTL)
	var dup bool
	err = in.store.Accept(ctx, func(tx *state.AcceptTx) error {
		dup = false
		seen, err := tx.SeenWebhook(rc.name, seenKey, now, expires)
		if err != nil || seen {
			dup = seen
			return err
		}
		return tx.Enqueue(subject, id, payload)
	})
	if err != nil {
		return in.commitErr(ctx, err)
	}
	if dup {
		return answer{status: http.StatusOK, outcome: outDuplicate, id: id}
	}
	return answer{status: http.StatusAccepted, outcome: outAccepted, id: id}
}
