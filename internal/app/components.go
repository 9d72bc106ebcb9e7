package app

import "github.com/cakework-relay/cakework-relay/internal/config"

// DefaultComponents lists the parts `relay serve` runs for cfg, in start
// order. Each is registered explicitly here, never by init().
func DefaultComponents(cfg *config.Config) []ComponentFactory {
	var fs []ComponentFactory
	return fs
}
