package event

import (
	"fmt"
	"path"
	"strings"
)

// Filter matches short event types ("build.failed") against the globs a sink
// is configured with: "*" matches everything, "vm.*" every VM event,
// "*.log" every log event; "*" stands for any run of characters, so
// "vm.auto*" matches "vm.autostopped".
type Filter struct{ globs []string }

// NewFilter checks the globs. An empty list matches everything. A glob that
// no event the relay emits can match is an error with a suggestion: a sink
// filtered on it would silently receive nothing.
func NewFilter(globs []string) (Filter, error) {
	for _, g := range globs {
		if err := CheckGlob(g); err != nil {
			return Filter{}, err
		}
	}
	return Filter{globs: globs}, nil
}

// CheckGlob checks one filter glob: its syntax, and that some event the
// relay emits can match it.
func CheckGlob(g string) error {
	if g == "" {
		return fmt.Errorf("empty event filter; use \"*\" for every event")
	}
	if _, err := path.Match(strings.ReplaceAll(g, ".", "/"), ""); err != nil {
		return fmt.Errorf("event filter %q: %w", g, err)
	}
	if !reachable(g) {
		return unreachableError(g)
	}
	return nil
}

// Match reports whether the short type matches any glob.
func (f Filter) Match(shortType string) bool {
	if len(f.globs) == 0 {
		return true
	}
	for _, g := range f.globs {
		if globMatch(g, shortType) {
			return true
		}
	}
	return false
}

// globMatch treats '*' as any run of characters, including dots.
func globMatch(glob, s string) bool {
	if glob == "*" {
		return true
	}
	parts := strings.Split(glob, "*")
	if len(parts) == 1 {
		return glob == s
	}
	if !strings.HasPrefix(s, parts[0]) {
		return false
	}
	s = s[len(parts[0]):]
	for i := 1; i < len(parts)-1; i++ {
		j := strings.Index(s, parts[i])
		if j < 0 {
			return false
		}
		s = s[j+len(parts[i]):]
	}
	return strings.HasSuffix(s, parts[len(parts)-1])
}

// Subjects returns NATS filter subjects under prefix that cover every type
// the globs can match. They may cover more (the consumer then checks Match);
// they never cover less.
func (f Filter) Subjects(prefix string) []string {
	if len(f.globs) == 0 {
		return []string{prefix + ".>"}
	}
	seen := map[string]bool{}
	var out []string
	add := func(s string) {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	for _, g := range f.globs {
		kind, action, hasAction := strings.Cut(g, ".")
		switch {
		case strings.Contains(kind, "*") || !hasAction:
			// "*", "*.log", "bu*": only the whole stream covers it.
			return []string{prefix + ".>"}
		case kind == KindWebhook:
			if strings.Contains(action, "*") {
				add(prefix + ".webhook.*")
			} else {
				add(prefix + ".webhook." + action)
			}
		case strings.Contains(action, "*"):
			add(prefix + "." + kind + ".>")
		default:
			add(prefix + "." + kind + ".*." + action)
		}
	}
	return out
}
