//go:build tools

// Package deps pins the chosen libraries in go.mod before code imports them.
package deps

import (
	_ "github.com/gorilla/mux"
	_ "github.com/nats-io/nats-server/v2/server"
	_ "github.com/nats-io/nats.go"
	_ "github.com/nats-io/nats.go/jetstream"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/prometheus/client_golang/prometheus/promhttp"
	_ "github.com/prometheus/client_golang/prometheus/testutil"
	_ "github.com/robfig/cron/v3"
	_ "github.com/slack-go/slack"
	_ "github.com/slack-go/slack/slacktest"
	_ "github.com/standard-webhooks/standard-webhooks/libraries/go"
	_ "go.etcd.io/bbolt"
	_ "golang.org/x/time/rate"
	_ "gopkg.in/yaml.v3"
)
