package autostop

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/gorilla/mux"
	"github.com/nats-io/nats.go"

	"github.com/cakework-relay/cakework-relay/internal/bus"
	"github.com/cakework-relay/cakework-relay/internal/clock"
	"github.com/cakework-relay/cakework-relay/internal/event"
	"github.com/cakework-relay/cakework-relay/internal/httpapi"
)

// ActivitySubject is the NATS request-reply subject for activity signals.
const ActivitySubject = "relay.vm.activity"

// Signals records activity signals. It works whether or not auto-stop is
// on, so signals sent before it is turned on still count.
type Signals struct {
	Store Store
	Clock clock.Clock
	// Remote, when set (a fleet member), records the signal at the
	// leader, which keeps the idle clocks (and checks Known there).
	Remote func(ctx context.Context, id string) (time.Time, error)
	// Known, when set, says why a VM's signals do not count (nil: they
	// do). The relay passes the poller's knowledge: a signal for a VM no
	// sweep has seen is refused, so a flood of made-up ids writes nothing.
	Known func(id string) error
}

// ErrUnknownVM wraps Known's refusal.
var ErrUnknownVM = errors.New("unknown VM")

// Record notes activity on a VM now: its idle clock restarts.
func (s Signals) Record(ctx context.Context, id string) (time.Time, error) {
	if err := event.CheckToken("vm id", id); err != nil {
		return time.Time{}, err
	}
	if s.Remote != nil {
		return s.Remote(ctx, id)
	}
	if s.Known != nil {
		if err := s.Known(id); err != nil {
			return time.Time{}, fmt.Errorf("%w: %w", ErrUnknownVM, err)
		}
	}
	now := s.Clock.Now()
	err := s.Store.Update(ctx, func(tx Tx) error {
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
		if err := event.CheckToken("vm id", id); err != nil {
			httpapi.WriteError(w, http.StatusBadRequest, err.Error())
			return
		}
		at, err := s.Record(req.Context(), id)
		if err != nil {
			status := http.StatusBadRequest
			switch {
			case errors.Is(err, ErrUnknownVM), s.Remote != nil && strings.Contains(err.Error(), ErrUnknownVM.Error()):
				// (The fleet's leader refuses in text.)
				status = http.StatusNotFound
			case s.Remote != nil, storeReady(s.Store) != nil:
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

// pruneChunk bounds the records one Prune transaction deletes.
const pruneChunk = 5000

// Prune deletes the records of VMs keep says no longer count (gone from
// the poller's knowledge) whose last activity, warning and stop are all
// older than olderThan, and reports how many it deleted. The relay runs it
// hourly, so records do not outlive their VMs.
func (s Signals) Prune(ctx context.Context, keep func(id string) bool, olderThan time.Duration) (int, error) {
	cutoff := s.Clock.Now().Add(-olderThan)
	total := 0
	for {
		n := 0
		err := s.Store.Update(ctx, func(tx Tx) error {
			n = 0
			var drop []string
			err := tx.ForEachSink(SinkName, func(k string, raw []byte) error {
				id, ok := strings.CutPrefix(k, "vm/")
				if !ok || len(drop) == pruneChunk || keep(id) {
					return nil
				}
				var r record
				if json.Unmarshal(raw, &r) == nil && latest(r.LastSignal, r.WarnedAt, r.StoppedAt).After(cutoff) {
					return nil
				}
				drop = append(drop, k)
				return nil
			})
			if err != nil {
				return err
			}
			for _, k := range drop {
				if err := tx.DeleteSink(SinkName, k); err != nil {
					return err
				}
			}
			n = len(drop)
			return nil
		})
		total += n
		if err != nil || n < pruneChunk {
			return total, err
		}
	}
}

// storeReady is the store's readiness, when it has one.
func storeReady(st Store) error {
	if r, ok := st.(interface{ Ready() error }); ok {
		return r.Ready()
	}
	return nil
}

func errReply(err error) []byte {
	b, _ := json.Marshal(map[string]string{"error": err.Error()})
	return b
}
