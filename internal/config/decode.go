package config

import (
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/confcheck"
	"github.com/cakework-relay/cakework-relay/internal/suggest"
	"gopkg.in/yaml.v3"
)

// The decoder walks the parsed yaml.Node tree and the Config struct
// together, guided by the struct's yaml tags. It does what yaml.Node.Decode
// would, plus what that cannot: it expands ${VAR} in scalar values only (so
// an environment value is always one scalar and can never add keys), and it
// records every unknown key and every wrong type with its key path instead
// of stopping at the first. Fields it is not told about keep the value they
// had, which is how defaults survive omitted keys.

var durationType = reflect.TypeOf(time.Duration(0))

const (
	// nodeBudget bounds the work on one file. Aliases and merge keys can make
	// a small file describe an exponentially large one.
	nodeBudget    = 1 << 16
	maxMergeDepth = 8
)

type decoder struct {
	env    func(string) (string, bool)
	probs  Problems
	seen   map[string]bool // key paths present in the file
	budget int
	spent  bool
}

func newDecoder(env func(string) (string, bool)) *decoder {
	return &decoder{env: env, seen: map[string]bool{}, budget: nodeBudget}
}

func (d *decoder) spend() bool {
	if d.budget <= 0 {
		if !d.spent {
			d.spent = true
			d.probs.Add("", "the file is too large or its aliases expand too far")
		}
		return false
	}
	d.budget--
	return true
}

func deref(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n == nil || n.Kind == 0 || (n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null")
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// decode stores n into v. A null node leaves v as it is.
func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string, secret bool) {
	if !d.spend() {
		return
	}
	n = deref(n)
	if isNull(n) {
		return
	}
	t := v.Type()
	if t == durationType {
		s, ok := d.scalar(n, path, "a duration", secret)
		if !ok {
			return
		}
		dur, err := time.ParseDuration(s)
		if err != nil {
			d.probs.Add(path, fmt.Sprintf("%s is not a duration; use Go durations like 30s, 5m, 1h", echo(s, secret)))
			return
		}
		v.SetInt(int64(dur))
		return
	}
	switch t.Kind() {
	case reflect.String:
		if s, ok := d.scalar(n, path, "a string", secret); ok {
			v.SetString(s)
		}
	case reflect.Bool:
		s, ok := d.scalar(n, path, "true or false", secret)
		if !ok {
			return
		}
		switch strings.ToLower(s) {
		case "true":
			v.SetBool(true)
		case "false":
			v.SetBool(false)
		default:
			d.probs.Add(path, fmt.Sprintf("%s is not a boolean; use true or false", echo(s, secret)))
		}
	case reflect.Int, reflect.Int64, reflect.Int32:
		s, ok := d.scalar(n, path, "a whole number", secret)
		if !ok {
			return
		}
		i, err := strconv.ParseInt(strings.ReplaceAll(s, "_", ""), 10, t.Bits())
		if err != nil {
			d.probs.Add(path, fmt.Sprintf("%s is not a whole number", echo(s, secret)))
			return
		}
		v.SetInt(i)
	case reflect.Float64:
		s, ok := d.scalar(n, path, "a number", secret)
		if !ok {
			return
		}
		f, err := strconv.ParseFloat(s, 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			d.probs.Add(path, fmt.Sprintf("%s is not a number", echo(s, secret)))
			return
		}
		v.SetFloat(f)
	case reflect.Pointer:
		if v.IsNil() {
			v.Set(reflect.New(t.Elem()))
		}
		d.decode(n, v.Elem(), path, secret)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.mismatch(n, path, "a list, like [a, b]", secret)
			return
		}
		if len(n.Content) == 0 {
			v.Set(reflect.Zero(t)) // [] is the same as no list
			return
		}
		s := reflect.MakeSlice(t, len(n.Content), len(n.Content))
		for i, e := range n.Content {
			d.decode(e, s.Index(i), fmt.Sprintf("%s[%d]", path, i), secret)
		}
		v.Set(s)
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			d.mismatch(n, path, "a mapping of keys to values", secret)
			return
		}
		pairs := d.pairs(n, path, 0)
		m := reflect.MakeMapWithSize(t, len(pairs))
		for _, p := range pairs {
			e := reflect.New(t.Elem()).Elem()
			d.decode(p.val, e, path+"["+strconv.Quote(p.key)+"]", secret)
			m.SetMapIndex(reflect.ValueOf(p.key), e)
		}
		v.Set(m)
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			d.mismatch(n, path, "a mapping of keys", secret)
			return
		}
		fields := fieldsOf(t)
		for _, p := range d.pairs(n, path, 0) {
			kp := joinPath(path, p.key)
			f, ok := fields[p.key]
			if !ok {
				msg := "unknown key"
				if s := suggestKey(p.key, fields); s != "" {
					msg += fmt.Sprintf(" (did you mean %q?)", s)
				}
				d.probs.Add(kp, msg)
				continue
			}
			d.seen[kp] = true
			d.decode(p.val, v.Field(f.index), kp, f.secret)
		}
	default:
		// A type the walker does not know is a bug in this package, not in
		// the file.
		panic(fmt.Sprintf("config: field %s has unsupported type %s", path, t))
	}
}

// scalar expands a scalar node's value, or records why it cannot.
func (d *decoder) scalar(n *yaml.Node, path, want string, secret bool) (string, bool) {
	if n.Kind != yaml.ScalarNode {
		d.mismatch(n, path, want, secret)
		return "", false
	}
	s, empty, err := expandReport(n.Value, d.env)
	if err != nil {
		d.probs.Add(path, err.Error())
		return "", false
	}
	if secret && len(empty) > 0 {
		// A secret that silently becomes empty turns signing or auth off.
		d.probs.Add(path, fmt.Sprintf("${%s} is empty (the variable is unset or empty): set it, or write ${%s:-} if this secret is meant to be empty", empty[0], empty[0]))
		return "", false
	}
	return s, true
}

func (d *decoder) mismatch(n *yaml.Node, path, want string, secret bool) {
	var got string
	switch n.Kind {
	case yaml.MappingNode:
		got = "a mapping"
	case yaml.SequenceNode:
		got = "a list"
	default:
		got = echo(n.Value, secret)
	}
	d.probs.Add(path, fmt.Sprintf("expected %s, got %s", want, got))
}

// echo quotes a value for an error message, unless it is secret.
func echo(s string, secret bool) string { return confcheck.Echo(s, secret) }

type pair struct {
	key string
	val *yaml.Node
}

// pairs lists a mapping's keys with merge keys ("<<: *base") resolved: keys
// written in the mapping win over merged ones, and earlier merged mappings
// win over later ones, as YAML says. A key written twice is a problem.
func (d *decoder) pairs(n *yaml.Node, path string, depth int) []pair {
	var explicit, merged []pair
	have := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if !d.spend() {
			return nil
		}
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" {
			merged = append(merged, d.merge(v, path, depth)...)
			continue
		}
		k = deref(k)
		if k == nil || k.Kind != yaml.ScalarNode {
			d.probs.Add(path, "keys must be plain strings, not lists or mappings")
			continue
		}
		if have[k.Value] {
			d.probs.Add(joinPath(path, k.Value), "duplicate key")
			continue
		}
		have[k.Value] = true
		explicit = append(explicit, pair{k.Value, v})
	}
	for _, p := range merged {
		if !have[p.key] {
			have[p.key] = true
			explicit = append(explicit, p)
		}
	}
	return explicit
}

func (d *decoder) merge(v *yaml.Node, path string, depth int) []pair {
	if depth >= maxMergeDepth {
		d.probs.Add(joinPath(path, "<<"), "merge keys nested too deeply")
		return nil
	}
	v = deref(v)
	var srcs []*yaml.Node
	switch {
	case v == nil:
	case v.Kind == yaml.MappingNode:
		srcs = []*yaml.Node{v}
	case v.Kind == yaml.SequenceNode:
		srcs = v.Content
	}
	var out []pair
	for _, s := range srcs {
		s = deref(s)
		if s == nil || s.Kind != yaml.MappingNode {
			d.probs.Add(joinPath(path, "<<"), "can only merge mappings (<<: *anchor)")
			continue
		}
		out = append(out, d.pairs(s, path, depth+1)...)
	}
	if len(srcs) == 0 {
		d.probs.Add(joinPath(path, "<<"), "can only merge mappings (<<: *anchor)")
	}
	return out
}

type fieldInfo struct {
	index  int
	secret bool
}

func fieldsOf(t reflect.Type) map[string]fieldInfo {
	m := make(map[string]fieldInfo, t.NumField())
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if !f.IsExported() || name == "-" || name == "" {
			continue
		}
		m[name] = fieldInfo{index: i, secret: f.Tag.Get("secret") == "true"}
	}
	return m
}

// suggestKey returns the known key closest to key, if it is close enough to be
// a typo.
func suggestKey(key string, fields map[string]fieldInfo) string {
	names := make([]string, 0, len(fields))
	for name := range fields {
		names = append(names, name)
	}
	lower := strings.ToLower(key)
	best := suggest.Closest(lower, names, 2)
	if best == "" || suggest.Distance(lower, best) > len(best)/2 {
		return ""
	}
	return best
}
