package ingest

import (
	"context"
	"net/http"
	"time"
)

// Fleet is where a fleet member (cluster.enabled) commits webhooks instead
// of the local journal: the ids every member remembers and the replicated
// stream itself. internal/cluster implements it on JetStream.
//
// A 2xx from a member means the event is on the stream (acknowledged by
// the stream's quorum when bus.replicas >= 3) and its ids are in the
// fleet's seen bucket; nothing of it is only on this member's disk, so a
// member whose data_dir vanishes loses no acknowledged webhook. The price
// is the bus round trips in the request, and 503 while the bus is down
// (a single relay journals and answers 202 through a bus outage).
type Fleet interface {
	// Seen is the event id remembered under key by any member (""
	// when it was remembered without one), and whether key is
	// remembered at all.
	Seen(ctx context.Context, key string) (eventID string, seen bool, err error)
	// Publish puts the event on the stream and returns once JetStream
	// acknowledged it; dup is true when the stream already had it (its
	// duplicate window).
	Publish(ctx context.Context, subject, msgID string, payload []byte) (dup bool, err error)
	// Remember keeps every key with eventID for ingest.seen_ttl, for
	// every member.
	Remember(ctx context.Context, eventID string, keys ...string) error
	// WatchBuild asks the fleet's poller to watch a build seen by
	// webhook (the leader polls; this member may not).
	WatchBuild(ctx context.Context, id string) error
}

// Keys in the fleet's seen bucket: a receiver's delivery id, or a change
// announced (the same namespaces as the local seen index).
func fleetDeliveryKey(receiver, seenKey string) string { return receiver + "/" + seenKey }

// FleetChangeKey is the seen-bucket key of a change announced by webhook
// (the cluster store asks it for the poller, app/fleet.go).
func FleetChangeKey(eventID string) string { return "change/" + eventID }

// fleetErr maps a fleet failure to 503: nothing acknowledged, the sender
// retries (a retry whose event did reach the stream is a duplicate).
func (in *Ingest) fleetErr(ctx context.Context, what string, err error) answer {
	if ctx.Err() != nil {
		return fail(http.StatusServiceUnavailable, outCanceled, "the request was canceled before it was committed; retry")
	}
	in.log.Warn("webhook not accepted: the fleet's bus failed", "step", what, "err", err)
	a := fail(http.StatusServiceUnavailable, outUnavailable, "the bus is unavailable ("+what+": "+err.Error()+"); retry later")
	a.retryAfter = retryState
	return a
}

// fleetBuild is cakeworkBuild for a fleet member: the same dedup rules
// over the fleet's seen bucket, then a synchronous publish, then the ids.
func (in *Ingest) fleetBuild(ctx context.Context, b *buildData, id, deliveryKey, subject string, payload []byte) answer {
	f := in.o.Fleet
	dk := ""
	if deliveryKey != "" {
		dk = fleetDeliveryKey(CakeworkReceiver, deliveryKey)
		first, seen, err := f.Seen(ctx, dk)
		if err != nil {
			return in.fleetErr(ctx, "reading seen ids", err)
		}
		if seen {
			return answer{status: http.StatusOK, outcome: outDuplicate, id: first}
		}
	}
	if _, seen, err := f.Seen(ctx, FleetChangeKey(id)); err != nil {
		return in.fleetErr(ctx, "reading seen ids", err)
	} else if seen {
		return in.fleetRemember(ctx, id, answer{status: http.StatusOK, outcome: outDuplicate, id: id}, dk)
	}
	if b.Status == statusCreated {
		for _, st := range []string{statusSucceeded, statusFailed} {
			_, seen, err := f.Seen(ctx, FleetChangeKey(in.o.IDs.BuildStatusID(b.BuildID, st)))
			if err != nil {
				return in.fleetErr(ctx, "reading seen ids", err)
			}
			if seen {
				return answer{status: http.StatusOK, outcome: outDuplicate}
			}
		}
	}
	return in.fleetPublish(ctx, subject, id, payload, func() error {
		if in.o.WatchBuilds {
			return f.WatchBuild(ctx, b.BuildID)
		}
		return nil
	}, FleetChangeKey(id), dk)
}

// fleetGeneric is genericWebhook for a fleet member.
func (in *Ingest) fleetGeneric(ctx context.Context, rc *receiver, id, seenKey, subject string, payload []byte) answer {
	key := fleetDeliveryKey(rc.name, seenKey)
	if _, seen, err := in.o.Fleet.Seen(ctx, key); err != nil {
		return in.fleetErr(ctx, "reading seen ids", err)
	} else if seen {
		return answer{status: http.StatusOK, outcome: outDuplicate, id: id}
	}
	return in.fleetPublish(ctx, subject, id, payload, nil, key)
}

// fleetPublish publishes, then remembers keys. A publish JetStream calls a duplicate is a
// 200 duplicate; either way the ids are written before the answer, so a
// retry of a webhook whose ids could not be written finds them.
func (in *Ingest) fleetPublish(ctx context.Context, subject, id string, payload []byte, after func() error, keys ...string) answer {
	dup, err := in.o.Fleet.Publish(ctx, subject, id, payload)
	if err != nil {
		return in.fleetErr(ctx, "publishing", err)
	}
	a := answer{status: http.StatusAccepted, outcome: outAccepted, id: id}
	if dup {
		a = answer{status: http.StatusOK, outcome: outDuplicate, id: id}
	}
	if after != nil && !dup {
		if err := after(); err != nil {
			// The event is on the stream; the poller confirms the
			// build when it next hears of it. Not worth a retry.
			in.log.Warn("webhook accepted but its build is not watched by the poller", "event", id, "err", err)
		}
	}
	return in.fleetRemember(ctx, id, a, keys...)
}

// fleetRemember writes keys (skipping empty ones) with id, then answers a.
func (in *Ingest) fleetRemember(ctx context.Context, id string, a answer, keys ...string) answer {
	ks := keys[:0:0]
	for _, k := range keys {
		if k != "" {
			ks = append(ks, k)
		}
	}
	if len(ks) == 0 {
		return a
	}
	if err := in.o.Fleet.Remember(ctx, id, ks...); err != nil {
		return in.fleetErr(ctx, "remembering the webhook id", err)
	}
	return a
}

// fleetDeadline bounds a fleet commit: a request does not wait on a bus
// that does not answer longer than a webhook sender waits.
const fleetDeadline = 10 * time.Second
