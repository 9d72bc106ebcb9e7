package poller

import (
	"context"
	"testing"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/cakework/cakeworksim"
	"github.com/cakework-relay/cakework-relay/internal/event"
	"github.com/cakework-relay/cakework-relay/internal/state"
)

// A change a webhook announced is recorded by the poller without a second
// event, however long after it comes (JetStream's dedup window may be over).
func TestChangeAnnouncedByWebhookIsNotAnnouncedAgain(t *testing.T) {
	e := newEnv(t, testConfig(), cakeworksim.Options{})
	e.noBus = true
	e.open()
	e.sim.CreateBuild(cakeworksim.BuildSpec{ID: "b-ann", Manual: true})
	e.sim.SetBuildStatus("b-ann", "succeeded", "img-1")
	ctx := context.Background()
	now := e.clk.Now()
	// As ingest records it: the mark through Accept, then the watch.
	if err := e.store.Accept(ctx, func(tx *state.AcceptTx) error {
		return tx.MarkChangeAnnounced(event.BuildStatusID("b-ann", "succeeded"), now, now.Add(72*time.Hour))
	}); err != nil {
		t.Fatal(err)
	}
	if err := e.store.Update(ctx, func(tx *state.Tx) error {
		return tx.PutWatch(state.KindBuild, "b-ann", state.Watch{Source: "webhook", AddedAt: now})
	}); err != nil {
		t.Fatal(err)
	}
	e.clk.Advance(time.Hour) // past any duplicate window
	e.mustTick(ScheduleBuilds)
	entries, err := e.store.PeekOutbox(100)
	if err != nil {
		t.Fatal(err)
	}
	for _, en := range entries {
		if ev, err := event.Decode(en.Payload); err == nil && ev.ShortType() == "build.succeeded" {
			t.Fatalf("the poller announced a change the webhook had announced: %s", en.Subject)
		}
	}
	e.store.View(func(tx *state.Tx) error {
		if st, ok, _ := tx.GetBuild("b-ann"); !ok || st.Status != "succeeded" || st.ImageID != "img-1" {
			t.Errorf("build state not recorded: %+v %v", st, ok)
		}
		return nil
	})
}
