package app

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cakework-relay/cakework-relay/internal/ingest"
)

// The README's subscriber examples work as printed against a relay with a
// generated token: the lines quoted here are in the README, and do what
// it says (a core subscription like `nats sub`, and the Go durable
// consumer) with the subscriber credential.
func TestReadmeSubscriberExamples(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{
		`export NATS_USER=subscriber NATS_PASSWORD="$(cat ./relay-data/nats-token)"`,
		`token, _ := os.ReadFile("./relay-data/nats-token") // or bus.embedded.token`,
		`nc, _ := nats.Connect("nats://127.0.0.1:4222", nats.UserInfo("subscriber", strings.TrimSpace(string(token))))`,
		`Durable:        "my-app",`,
		`FilterSubjects: []string{"cakework.build.>", "cakework.vm.*.autostopped"},`,
	} {
		if !strings.Contains(string(readme), line) {
			t.Errorf("the README no longer has %q: keep this test in step", line)
		}
	}

	cfg := testConfig(t)
	cfg.Ingest.Cakework = ingest.CakeworkConfig{Configured: true, Token: "hooktoken"}
	a := startApp(t, Options{Config: cfg})
	url := a.Core().Bus.ClientURL()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// As printed, with data_dir in place of ./relay-data.
	token, _ := os.ReadFile(filepath.Join(cfg.DataDir, "nats-token"))
	nc, err := nats.Connect(url, nats.UserInfo("subscriber", strings.TrimSpace(string(token))))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	sub, err := nc.SubscribeSync("cakework.build.*.succeeded") // nats sub
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	cons, err := js.CreateOrUpdateConsumer(ctx, "CAKEWORK", jetstream.ConsumerConfig{
		Durable:        "my-app",
		FilterSubjects: []string{"cakework.build.>", "cakework.vm.*.autostopped"},
		AckPolicy:      jetstream.AckExplicitPolicy,
	})
	if err != nil {
		t.Fatal("the README's durable consumer:", err)
	}
	got := make(chan string, 1)
	cc, err := cons.Consume(func(m jetstream.Msg) {
		var ev struct {
			ID, Type, Subject string
			Data              json.RawMessage
		}
		if err := json.Unmarshal(m.Data(), &ev); err == nil {
			select {
			case got <- ev.Subject:
			default:
			}
		}
		m.Ack()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Stop()

	post(t, a, "b-readme", "img-readme")
	select {
	case s := <-got:
		if s != "b-readme" {
			t.Errorf("durable consumer got %q", s)
		}
	case <-ctx.Done():
		t.Fatal("the durable consumer got nothing")
	}
	if _, err := sub.NextMsg(5 * time.Second); err != nil {
		t.Fatal("the core subscription got nothing:", err)
	}
}
