package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"reflect"
	"strings"

	"gopkg.in/yaml.v3"
)

// Load reads, parses and validates the config file at path. An empty path
// means no file: Default(env), validated. env is how the environment is
// read, normally os.LookupEnv; nil is an empty environment.
//
// A file that cannot be read gives one error naming the path. Anything wrong
// inside the file gives Problems listing every problem at once.
func Load(path string, env func(string) (string, bool)) (*Config, error) {
	if path == "" {
		c := Default(env)
		if err := c.Validate(); err != nil {
			return nil, err
		}
		return c, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, fmt.Errorf("cannot read config file %s: %w", path, err)
	}
	return Parse(data, env)
}

// Parse decodes and validates a config file's contents. On error it returns
// Problems: unknown keys, wrong types and failed validation, all together.
func Parse(data []byte, env func(string) (string, bool)) (*Config, error) {
	c, probs := decode(data, env)
	if c == nil {
		return nil, probs
	}
	// A key the walker could not decode kept its default or stayed empty;
	// validation saying so again at the same path would only be noise.
	reported := map[string]bool{}
	for _, p := range probs {
		reported[p.Path] = true
	}
	var vp Problems
	if errors.As(c.Validate(), &vp) {
		for _, p := range vp {
			if !reported[p.Path] {
				probs = append(probs, p)
			}
		}
	}
	if len(probs) > 0 {
		return nil, probs
	}
	return c, nil
}

// Decode is Parse without validation: the file decoded over the defaults,
// with the environment fallbacks, or Problems with the file's structure
// (YAML, unknown keys, wrong types). Its Config may break any rule of
// Validate; it is for tests that hand such a config to the components.
func Decode(data []byte, env func(string) (string, bool)) (*Config, error) {
	c, probs := decode(data, env)
	if len(probs) > 0 {
		return nil, probs
	}
	return c, nil
}

// decode returns the decoded config (nil if the file is not YAML) and the
// problems with its structure.
func decode(data []byte, env func(string) (string, bool)) (*Config, Problems) {
	if env == nil {
		env = noEnv
	}
	root, err := parseYAML(data)
	if err != nil {
		return nil, Problems{{Msg: err.Error()}}
	}
	c := preset()
	d := newDecoder(env)
	if root != nil {
		d.decode(root, reflect.ValueOf(c).Elem(), "", false)
	}
	c.Ingest.Cakework.Configured = d.seen["ingest.cakework"]
	fill(c)
	applyEnv(c, env)
	return c, d.probs
}

// parseYAML returns the top-level node of the single document in data, or
// nil for an empty file.
func parseYAML(data []byte) (root *yaml.Node, err error) {
	defer func() {
		// The YAML library is not ours; a panic in it must not take down
		// check-config or the daemon with a stack trace.
		if r := recover(); r != nil {
			root, err = nil, fmt.Errorf("invalid YAML: %v", r)
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, fmt.Errorf("invalid YAML: %s", strings.TrimPrefix(err.Error(), "yaml: "))
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, errors.New("invalid YAML: the file must hold one document (remove the extra \"---\")")
	}
	n := &doc
	if n.Kind == yaml.DocumentNode {
		if len(n.Content) == 0 {
			return nil, nil
		}
		n = n.Content[0]
	}
	if isNull(deref(n)) {
		return nil, nil
	}
	if m := deref(n); m.Kind != yaml.MappingNode {
		return nil, errors.New("the config file must be a mapping of keys (data_dir: ..., http: ...)")
	}
	return n, nil
}
