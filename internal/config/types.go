package config

import (
	"time"

	"github.com/cakework-relay/cakework-relay/internal/autostop"
	"github.com/cakework-relay/cakework-relay/internal/bus"
	"github.com/cakework-relay/cakework-relay/internal/cluster"
	"github.com/cakework-relay/cakework-relay/internal/httpapi"
	"github.com/cakework-relay/cakework-relay/internal/ingest"
	"github.com/cakework-relay/cakework-relay/internal/poller"
	"github.com/cakework-relay/cakework-relay/internal/sinks/httpcb"
	"github.com/cakework-relay/cakework-relay/internal/sinks/slack"
)

// Config is the whole relay configuration: the sections, each owned by its
// component (see the package doc), composed by their keys. Every key is
// listed in config.example.yaml and in the README's reference; a test keeps
// the three in step. Fields tagged secret:"true" are never printed in errors
// or logs.
type Config struct {
	DataDir  string         `yaml:"data_dir"`
	Log      Log            `yaml:"log"`
	HTTP     httpapi.Config `yaml:"http"`
	Cakework Cakework       `yaml:"cakework"`
	Bus      bus.Config     `yaml:"bus"`
	Ingest   ingest.Config  `yaml:"ingest"`
	Poller   poller.Config  `yaml:"poller"`
	Sinks    Sinks          `yaml:"sinks"`
	Cluster  cluster.Config `yaml:"cluster"`
}

type Log struct {
	Level  string `yaml:"level"`  // debug | info | warn | error
	Format string `yaml:"format"` // text | json
}

type Cakework struct {
	URL       string        `yaml:"url"`
	APIKey    string        `yaml:"api_key" secret:"true"`
	RateLimit float64       `yaml:"rate_limit"`
	Timeout   time.Duration `yaml:"timeout"`
}

// Sinks lists the sinks, and holds the auto-stopper's settings (a producer
// since it moved to internal/autostop, under its old key).
type Sinks struct {
	Slack    []slack.Config  `yaml:"slack"`
	HTTP     []httpcb.Config `yaml:"http"`
	Autostop autostop.Config `yaml:"autostop"`
}
