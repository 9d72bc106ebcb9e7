package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cakework-relay/cakework-relay/internal/bus"
	"github.com/cakework-relay/cakework-relay/internal/config"
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
	token := fs.String("token", os.Getenv("RELAY_NATS_TOKEN"), "subscriber token (bus.embedded.token; env RELAY_NATS_TOKEN);\ndefault: read from the relay's config (-config) or "+bus.TokenFile(defaultDataDir))
	cfgPath := fs.String("config", "", "the relay's config file: its bus address, stream and subscriber token")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: relay tail [-config FILE] [-server URL] [-subject P] [-json] [-since D]\n\nPrints events from a running relay's bus, one line each.")
		fs.PrintDefaults()
	}
	if code, ok := parseFlags(fs, args, stderr); !ok {
		return code
	}
	if fs.NArg() != 0 || *since < 0 {
		fs.Usage()
		return 2
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	dataDir := defaultDataDir
	if *cfgPath != "" {
		cfg, err := config.Load(*cfgPath, os.LookupEnv)
		if err != nil {
			fmt.Fprintln(stderr, "relay tail:", err)
			return 1
		}
		dataDir = cfg.DataDir
		if *token == "" {
			*token = cfg.Bus.Embedded.Token
		}
		if !set["server"] && cfg.Bus.URL == "" && cfg.Bus.Embedded.Listen != "" {
			*server = "nats://" + cfg.Bus.Embedded.Listen
		}
		if !set["stream"] {
			*stream = cfg.Bus.Stream
		}
		if !set["subject"] {
			*subject = cfg.Bus.SubjectPrefix + ".>"
		}
	}
	if *token == "" {
		// The token the relay generated (bus.embedded.token unset).
		if raw, err := os.ReadFile(bus.TokenFile(dataDir)); err == nil {
			*token = strings.TrimSpace(string(raw))
		}
	}
	opts := []nats.Option{nats.Name("relay tail"), nats.MaxReconnects(-1)}
	if *token != "" {
		opts = append(opts, nats.UserInfo(bus.UserSubscriber, *token))
	}
	nc, err := nats.Connect(*server, opts...)
	if err != nil {
		hint := "is the relay running? set -server to its bus address"
		if errors.Is(err, nats.ErrAuthorization) || strings.Contains(strings.ToLower(err.Error()), "authorization") {
			hint = "pass the subscriber token: -config with the relay's config file, -token, or RELAY_NATS_TOKEN (bus.embedded.token, or the content of " + bus.TokenFile("<data_dir>") + ")"
		}
		fmt.Fprintf(stderr, "relay tail: cannot reach NATS at %s: %v (%s)\n", *server, err, hint)
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

// defaultDataDir is data_dir's default, where tail looks for a generated
// token without -config.
const defaultDataDir = config.DefaultDataDir

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
