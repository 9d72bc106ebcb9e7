package app

import "github.com/cakework-relay/cakework-relay/internal/config"

// DefaultComponents lists the parts `relay serve` runs for cfg, in start
// order. Each is registered explicitly here, never by init().
func DefaultComponents(cfg *config.Config) []ComponentFactory {
	var fs []ComponentFactory
	fs = append(fs, sinksComponent)    // sink runners + DLQ admin API (internal/sinks); first, so consumers exist before anything publishes
	fs = append(fs, ingestComponent)   // webhook receivers (internal/ingest)
	fs = append(fs, pollerComponent)   // cron-driven poller + /v1/watches (internal/poller); off without an API key
	fs = append(fs, autostopComponent) // activity signals always; the idle-VM stopper when enabled (after the poller)
	return fs
}
