package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cakework-relay/cakework-relay/internal/console"
	"github.com/cakework-relay/cakework-relay/internal/event"
)

func runTail(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tail", flag.ContinueOnError)
	server := fs.String("server", envOr("RELAY_NATS_URL", "nats://127.0.0.1:4222"), "NATS URL of the relay's bus (env RELAY_NATS_URL)")
	subject := fs.String("subject", "cakework.>", "subject filter, e.g. 'cakework.build.>' or 'cakework.vm.*.autostopped'")
	stream := fs.String("stream", "CAKEWORK", "JetStream stream name (bus.stream)")
	asJSON := fs.Bool("json", false, "print each event as raw CloudEvents JSON")
	since := fs.Duration("since", 0, "start this long ago (e.g. 10m); default: only new events")
	token := fs.String("token", os.Getenv("RELAY_NATS_TOKEN"), "NATS token (bus.embedded.token; env RELAY_NATS_TOKEN)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: relay tail [-server URL] [-subject P] [-json] [-since D]\n\nPrints events from a running relay's bus, one line each.")
		fs.PrintDefaults()
	}
	if code, ok := parseFlags(fs, args, stderr); !ok {
		return code
	}
	if fs.NArg() != 0 || *since < 0 {
		fs.Usage()
		return 2
	}
	opts := []nats.Option{nats.Name("relay tail"), nats.MaxReconnects(-1)}
	if *token != "" {
		opts = append(opts, nats.Token(*token))
	}
	nc, err := nats.Connect(*server, opts...)
	if err != nil {
		fmt.Fprintf(stderr, "relay tail: cannot reach NATS at %s: %v (is the relay running? set -server to its bus address)\n", *server, err)
		return 1
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		fmt.Fprintln(stderr, "relay tail:", err)
		return 1
	}
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{*subject}, DeliverPolicy: jetstream.DeliverNewPolicy}
	if *since > 0 {
		start := time.Now().Add(-*since)
		cfg.DeliverPolicy = jetstream.DeliverByStartTimePolicy
		cfg.OptStartTime = &start
	}
	cons, err := js.OrderedConsumer(ctx, *stream, cfg)
	if err != nil {
		fmt.Fprintf(stderr, "relay tail: stream %s on %s: %v (check -stream and -server)\n", *stream, *server, err)
		return 1
	}
	p := console.New(stdout)
	cc, err := cons.Consume(func(m jetstream.Msg) {
		if *asJSON {
			fmt.Fprintln(stdout, string(m.Data()))
			return
		}
		var e event.Event
		if err := json.Unmarshal(m.Data(), &e); err != nil {
			fmt.Fprintf(stderr, "relay tail: %s: not an event: %v\n", m.Subject(), err)
			return
		}
		p.Print(e)
	})
	if err != nil {
		fmt.Fprintln(stderr, "relay tail:", err)
		return 1
	}
	defer cc.Stop()
	fmt.Fprintf(stderr, "relay tail: %s on %s (Ctrl-C to stop)\n", *subject, *server)
	<-ctx.Done()
	return 0
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
