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
	"github.com/cakework-relay/cakework-relay/internal/sinks"
)

// InstallKeyFile is where a single relay keeps its install key.
const InstallKeyFile = "install-key"

// installKey is the install's secret: it signs every message the relay
// publishes (bus.HdrMAC), so sinks and DLQ replay deliver only the relay's
// own. It must be the same for every relay that publishes to and consumes
// from the same streams: a fleet supplies it from a replicated store
// instead of this file; this function is the one place it is loaded.
func installKey(cfg *config.Config) ([]byte, error) {
	s, err := secretFile(filepath.Join(cfg.DataDir, InstallKeyFile))
	if err != nil {
		return nil, err
	}
	return hex.DecodeString(s)
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
