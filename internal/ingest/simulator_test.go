package ingest_test

import (
	"context"
	"testing"

	"github.com/cakework-relay/cakework-relay/internal/cakework"
	"github.com/cakework-relay/cakework-relay/internal/cakework/cakeworksim"
	"github.com/cakework-relay/cakework-relay/internal/event"
	"github.com/cakework-relay/cakework-relay/internal/ingest"
)

// The simulator's default (split) webhooks, pointed at a token URL as the
// README tells users to register it, are accepted by a receiver with
// token auth: one event per finished build.
func TestSimulatorWebhooksToTokenURL(t *testing.T) {
	cfg := defaultIngestConfig()
	cfg.Cakework = ingest.CakeworkConfig{Configured: true, Token: "abc"}
	e := newEnv(t, cfg)
	sim := cakeworksim.New(cakeworksim.Options{Clock: e.clock, WebhookURL: e.srv.URL + "/webhooks/cakework?token=abc"})
	ok := sim.CreateBuild(cakeworksim.BuildSpec{Manual: true})
	bad := sim.CreateBuild(cakeworksim.BuildSpec{Manual: true})
	sim.SetBuildStatus(ok.BuildID, cakework.BuildSucceeded, "IMG1")
	sim.SetBuildStatus(bad.BuildID, cakework.BuildFailed, "")
	sim.Step(context.Background())
	if n := sim.PendingWebhooks(); n != 0 {
		t.Fatalf("%d webhooks not accepted", n)
	}
	got := map[string]string{}
	for _, ev := range e.stream() {
		got[ev.ID] = ev.Type
	}
	want := map[string]string{
		event.BuildStatusID(ok.BuildID, cakework.BuildSucceeded): "com.cakework.build.succeeded",
		event.BuildStatusID(bad.BuildID, cakework.BuildFailed):   "com.cakework.build.failed",
	}
	if len(got) != len(want) {
		t.Fatalf("stream %v, want %v", got, want)
	}
	for id, typ := range want {
		if got[id] != typ {
			t.Fatalf("stream %v, want %v", got, want)
		}
	}
}
