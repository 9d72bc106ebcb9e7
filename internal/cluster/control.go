package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cakework-relay/cakework-relay/internal/poller"
)

// Leader is what the leader runs for the admin API's requests, which any
// member forwards to it over NATS (ControlSubject).
type Leader interface {
	Watch(ctx context.Context, kind, id, source string) (bool, error)
	Unwatch(ctx context.Context, kind, id string) (bool, error)
	Watches() (poller.WatchList, error)
	Activity(ctx context.Context, id string) (time.Time, error)
}

type controlRequest struct {
	Op     string `json:"op"` // watch | unwatch | watches | activity
	Kind   string `json:"kind,omitempty"`
	ID     string `json:"id,omitempty"`
	Source string `json:"source,omitempty"`
}

type controlReply struct {
	Changed bool              `json:"changed,omitempty"`
	List    *poller.WatchList `json:"list,omitempty"`
	At      time.Time         `json:"at,omitzero"`
	Error   string            `json:"error,omitempty"`
}

// Remote forwards the admin API's watch and activity requests to the
// leader. It implements poller.Remote.
type Remote struct {
	NC      *nats.Conn
	Subject string // ControlSubject(stream)
	Timeout time.Duration
}

var _ poller.Remote = (*Remote)(nil)

// ErrNoLeader is returned while no member leads (an election is under way).
var ErrNoLeader = errors.New("no fleet member leads right now (a new leader takes over within 2x cluster.lease_ttl); try again shortly")

func (r *Remote) call(ctx context.Context, req controlRequest) (controlReply, error) {
	body, _ := json.Marshal(req)
	t := r.Timeout
	if t <= 0 {
		t = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, t)
	defer cancel()
	m, err := r.NC.RequestWithContext(ctx, r.Subject, body)
	if errors.Is(err, nats.ErrNoResponders) {
		return controlReply{}, ErrNoLeader
	}
	if err != nil {
		return controlReply{}, fmt.Errorf("forward to the fleet's leader: %w", err)
	}
	var rep controlReply
	if err := json.Unmarshal(m.Data, &rep); err != nil {
		return controlReply{}, fmt.Errorf("the fleet's leader answered garbage: %w", err)
	}
	if rep.Error != "" {
		return rep, errors.New(rep.Error)
	}
	return rep, nil
}

// Watch asks the leader to watch kind/id.
func (r *Remote) Watch(ctx context.Context, kind, id, source string) (bool, error) {
	rep, err := r.call(ctx, controlRequest{Op: "watch", Kind: kind, ID: id, Source: source})
	return rep.Changed, err
}

// Unwatch asks the leader to stop watching kind/id.
func (r *Remote) Unwatch(ctx context.Context, kind, id string) (bool, error) {
	rep, err := r.call(ctx, controlRequest{Op: "unwatch", Kind: kind, ID: id})
	return rep.Changed, err
}

// Watches asks the leader for the watch list.
func (r *Remote) Watches(ctx context.Context) (poller.WatchList, error) {
	rep, err := r.call(ctx, controlRequest{Op: "watches"})
	if err != nil || rep.List == nil {
		return poller.WatchList{Builds: []poller.WatchInfo{}, FunctionBuilds: []poller.WatchInfo{}}, err
	}
	return *rep.List, nil
}

// Activity records an activity signal at the leader.
func (r *Remote) Activity(ctx context.Context, id string) (time.Time, error) {
	rep, err := r.call(ctx, controlRequest{Op: "activity", ID: id})
	return rep.At, err
}

// ServeControl answers forwarded requests with l until the subscription is
// ended. Only the leader subscribes.
func ServeControl(nc *nats.Conn, subject string, l Leader) (*nats.Subscription, error) {
	return nc.Subscribe(subject, func(m *nats.Msg) {
		var req controlRequest
		var rep controlReply
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var err error
		if err = json.Unmarshal(m.Data, &req); err == nil {
			switch req.Op {
			case "watch":
				rep.Changed, err = l.Watch(ctx, req.Kind, req.ID, req.Source)
			case "unwatch":
				rep.Changed, err = l.Unwatch(ctx, req.Kind, req.ID)
			case "watches":
				var wl poller.WatchList
				wl, err = l.Watches()
				rep.List = &wl
			case "activity":
				rep.At, err = l.Activity(ctx, req.ID)
			default:
				err = fmt.Errorf("unknown operation %q", req.Op)
			}
		}
		if err != nil {
			rep.Error = err.Error()
		}
		b, _ := json.Marshal(rep)
		_ = m.Respond(b)
	})
}
