package app

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/cakework-relay/cakework-relay/internal/bus"
	"github.com/cakework-relay/cakework-relay/internal/config"
	"github.com/cakework-relay/cakework-relay/internal/event"
	"github.com/cakework-relay/cakework-relay/internal/sinks"
	"github.com/cakework-relay/cakework-relay/internal/state"
)

// InstallKeyFile is where a single relay keeps its install key.
const InstallKeyFile = "install-key"

// EventIDsFile records the event id scheme of the install: "keyed" or
// "legacy" (see installKey).
const EventIDsFile = "event-ids"

// installKey is the install's secret and what it keys: it signs every
// message the relay publishes (bus.HdrMAC), so sinks and DLQ replay deliver
// only the relay's own; and it keys event ids (event.KeyedIDs), unless the
// install predates keyed ids.
type installKey struct {
	mac    []byte
	ids    event.IDs
	scheme string // keyed | legacy
}

// loadInstallKey is the one place the install key is loaded. Every relay
// that publishes to and consumes from the same streams must have the same
// key and scheme: a fleet supplies both from a replicated store instead of
// these files.
//
// Event ids: a fresh data_dir gets keyed ids. One whose state existed
// before this version keeps the legacy (unkeyed) ids, so changes already
// published are never announced again under new ids; the operator switches
// it by writing "keyed" into <data_dir>/event-ids (README).
func loadInstallKey(cfg *config.Config) (installKey, error) {
	s, err := secretFile(filepath.Join(cfg.DataDir, InstallKeyFile))
	if err != nil {
		return installKey{}, err
	}
	key, err := hex.DecodeString(s)
	if err != nil {
		return installKey{}, err
	}
	scheme, err := eventIDScheme(cfg.DataDir)
	if err != nil {
		return installKey{}, err
	}
	return newInstallKey(key, scheme), nil
}

func newInstallKey(key []byte, scheme string) installKey {
	k := installKey{mac: key, scheme: scheme}
	if scheme == "keyed" {
		k.ids = event.KeyedIDs(key)
	}
	return k
}

// eventIDScheme reads <data_dir>/event-ids, or decides and records it:
// "legacy" when the state (relay.db) already exists, else "keyed".
func eventIDScheme(dataDir string) (string, error) {
	path := filepath.Join(dataDir, EventIDsFile)
	raw, err := os.ReadFile(path)
	if err == nil {
		switch s := strings.TrimSpace(string(raw)); s {
		case "keyed", "legacy":
			return s, nil
		default:
			return "", fmt.Errorf("%s says %q; write keyed (event ids nobody can predict) or legacy (the ids of installs from before keyed ids)", path, s)
		}
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", err
	}
	scheme := "keyed"
	if _, err := os.Stat(filepath.Join(dataDir, state.FileName)); err == nil {
		scheme = "legacy"
	}
	if err := os.WriteFile(path, []byte(scheme+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("record the event id scheme: %w", err)
	}
	return scheme, nil
}

// subscriberToken is bus.embedded.token, or the one generated into
// <data_dir>/nats-token when none is set.
func subscriberToken(cfg *config.Config) (string, error) {
	if cfg.Bus.Embedded.Token != "" || cfg.Bus.URL != "" {
		return cfg.Bus.Embedded.Token, nil
	}
	return secretFile(bus.TokenFile(cfg.DataDir))
}

// reservedConsumers are the sinks' durable consumer names: subscribers may
// not touch them.
func reservedConsumers(cfg *config.Config) []string {
	var names []string
	for _, s := range cfg.Sinks.HTTP {
		names = append(names, sinks.DurableName(s.Name))
	}
	for _, s := range cfg.Sinks.Slack {
		names = append(names, sinks.DurableName(s.Name))
	}
	return names
}

// secretFile reads a generated secret (64 hex digits), creating it with
// mode 0600 when it does not exist.
func secretFile(path string) (string, error) {
	raw, err := os.ReadFile(path)
	if err == nil {
		s := strings.TrimSpace(string(raw))
		if _, derr := hex.DecodeString(s); derr != nil || len(s) < 32 {
			return "", fmt.Errorf("%s is not a secret the relay generated (want hex digits); delete it to have a new one made", path)
		}
		if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
			return "", fmt.Errorf("%s is readable by others (mode %v); chmod 600 it", path, fi.Mode().Perm())
		}
		return s, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", err
	}
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	s := hex.EncodeToString(b[:])
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", fmt.Errorf("create %s: %w", path, err)
	}
	_, err = f.WriteString(s + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return s, nil
}
