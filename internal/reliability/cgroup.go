package reliability

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// MemCgroup is a memory cgroup that a relay runs in (Relay.Cgroup), so a
// benchmark sees it in a container of a given size: the kernel reclaims
// its page cache and, past the limit, kills it; relay serve sizes its Go
// memory limit from it (automemlimit). It needs root and a memory
// controller: cgroup v2 (the unified hierarchy with "memory" enabled) or
// v1 (/sys/fs/cgroup/memory).
type MemCgroup struct {
	Path string
	v2   bool
	size string
}

// NewMemCgroup creates a memory cgroup named name limited to size (say
// 256MiB, as a -cgroup flag gives it).
func NewMemCgroup(name, size string) (*MemCgroup, error) {
	limit, err := parseBytes(size)
	if err != nil {
		return nil, fmt.Errorf("-cgroup: %w", err)
	}
	for _, root := range []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified"} {
		if b, err := os.ReadFile(filepath.Join(root, "cgroup.subtree_control")); err == nil && strings.Contains(string(b), "memory") {
			c := &MemCgroup{Path: filepath.Join(root, name), v2: true, size: size}
			return c, c.create("memory.max", limit)
		}
	}
	if _, err := os.Stat("/sys/fs/cgroup/memory/memory.limit_in_bytes"); err == nil {
		c := &MemCgroup{Path: filepath.Join("/sys/fs/cgroup/memory", name), size: size}
		return c, c.create("memory.limit_in_bytes", limit)
	}
	return nil, errors.New("no cgroup memory controller here (neither cgroup v2 with memory enabled nor v1's /sys/fs/cgroup/memory); run without a container limit")
}

func (c *MemCgroup) create(file string, limit int64) error {
	if err := os.Mkdir(c.Path, 0o755); err != nil && !os.IsExist(err) {
		return fmt.Errorf("create the cgroup %s (needs root): %w", c.Path, err)
	}
	if err := os.WriteFile(filepath.Join(c.Path, file), []byte(strconv.FormatInt(limit, 10)), 0o644); err != nil {
		os.Remove(c.Path)
		return fmt.Errorf("limit the cgroup %s: %w", c.Path, err)
	}
	return nil
}

func (c *MemCgroup) read(file string) int64 {
	b, err := os.ReadFile(filepath.Join(c.Path, file))
	if err != nil {
		return -1
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return -1
	}
	return n
}

// Peak is the most memory (anonymous and page cache) the cgroup was
// charged, in bytes; -1 when the kernel does not say.
func (c *MemCgroup) Peak() int64 {
	if c.v2 {
		return c.read("memory.peak")
	}
	return c.read("memory.max_usage_in_bytes")
}

// OOMKills is how many processes the kernel killed in the cgroup for
// lack of memory (-1 when it does not say).
func (c *MemCgroup) OOMKills() int64 {
	file, key := "memory.oom_control", "oom_kill "
	if c.v2 {
		file, key = "memory.events", "oom_kill "
	}
	b, err := os.ReadFile(filepath.Join(c.Path, file))
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, key); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err == nil {
				return n
			}
		}
	}
	return -1
}

// Report is the line a benchmark prints once the relay has exited.
func (c *MemCgroup) Report() string {
	return fmt.Sprintf("cgroup limit %s: peak charge %.0f MB (anonymous memory and page cache), OOM kills %d", c.size, float64(c.Peak())/1e6, c.OOMKills())
}

// Close removes the cgroup (once its processes have exited).
func (c *MemCgroup) Close() error { return os.Remove(c.Path) }

// parseBytes reads a size such as 256MiB, 256MB or 268435456.
func parseBytes(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}, {"B", 1}}
	for _, u := range units {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil || n <= 0 {
				return 0, fmt.Errorf("%q: want a size such as 256MiB", s)
			}
			return n * u.mult, nil
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%q: want a size such as 256MiB", s)
	}
	return n, nil
}
