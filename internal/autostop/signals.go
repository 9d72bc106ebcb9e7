package autostop

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/gorilla/mux"
	"github.com/nats-io/nats.go"

	"github.com/cakework-relay/cakework-relay/internal/bus"
	"github.com/cakework-relay/cakework-relay/internal/clock"
	"github.com/cakework-relay/cakework-relay/internal/event"
	"github.com/cakework-relay/cakework-relay/internal/httpapi"
	"github.com/cakework-relay/cakework-relay/internal/state"
)

// ActivitySubject is the NATS request-reply subject for activity signals.
const ActivitySubject = "relay.vm.activity"

// Signals records activity signals. It works whether or not auto-stop is
// on, so signals sent before it is turned on still count.
type Signals struct {
	Store *state.Store
	Clock clock.Clock
	// Known, when set, says whether the poller knows VM id: a signal for
	// any other is refused (junk ids would fill the state).
	Known func(id string) bool
}

// Record notes activity on a VM now: its idle clock restarts.
func (s Signals) Record(ctx context.Context, id string) (time.Time, error) {
	if err := event.CheckToken("vm id", id); err != nil {
		return time.Time{}, err
	}
	if s.Known != nil && !s.Known(id) {
		return time.Time{}, fmt.Errorf("no VM %s is known to the poller; activity counts only for VMs it has seen", id)
	}
	now := s.Clock.Now()
	err := s.Store.Update(ctx, func(tx *state.Tx) error {
		var r record
		if _, err := tx.GetSink(SinkName, "vm/"+id, &r); err != nil {
			return err
		}
		if now.After(r.LastSignal) {
			r.LastSignal = now
		}
		return tx.PutSink(SinkName, "vm/"+id, r)
	})
	return now, err
}

// Mount adds POST /vms/{id}/activity to the admin router.
func (s Signals) Mount(r *mux.Router) {
	r.HandleFunc("/vms/{id}/activity", func(w http.ResponseWriter, req *http.Request) {
		id := mux.Vars(req)["id"]
		at, err := s.Record(req.Context(), id)
		if err != nil {
			status := http.StatusBadRequest
			if s.Store.Ready() != nil {
				status = http.StatusServiceUnavailable
			}
			httpapi.WriteError(w, status, err.Error())
			return
		}
		httpapi.WriteJSON(w, http.StatusOK, map[string]any{"ok": true, "vmId": id, "at": at.UTC()})
	}).Methods(http.MethodPost)
}

// Subscribe answers relay.vm.activity requests: {"id": "..."} gets
// {"ok": true} or {"error": "..."}.
func (s Signals) Subscribe(nc *nats.Conn) (*nats.Subscription, error) {
	sub, err := nc.Subscribe(ActivitySubject, func(m *nats.Msg) {
		if !bus.FromClient(m) {
			return // the stream delivered to this subject by a consumer
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = m.Respond(s.handle(ctx, m.Data))
	})
	if err != nil {
		return nil, fmt.Errorf("subscribe %s: %w", ActivitySubject, err)
	}
	return sub, nil
}

func (s Signals) handle(ctx context.Context, body []byte) []byte {
	var req struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return errReply(fmt.Errorf("want {\"id\": \"<vm id>\"}: %v", err))
	}
	if _, err := s.Record(ctx, req.ID); err != nil {
		return errReply(err)
	}
	return []byte(`{"ok":true}`)
}

func errReply(err error) []byte {
	b, _ := json.Marshal(map[string]string{"error": err.Error()})
	return b
}
