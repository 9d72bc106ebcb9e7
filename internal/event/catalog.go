package event

import (
	"fmt"
	"github.com/cakework-relay/cakework-relay/internal/confcheck"
	"strings"

	"github.com/cakework-relay/cakework-relay/internal/suggest"
)

// Types is the catalogue of short event types the relay emits with a fixed
// name. Two families are open: vm.<state> (any state the API reports) and
// webhook.<receiver> (any receiver name); they are listed here with their
// common members, for suggestions.
var Types = []string{
	"build.created", "build.succeeded", "build.failed", "build.stuck", "build.log",
	"vm.created", "vm.started", "vm.stopped", "vm.destroyed", "vm.log", "vm.idle", "vm.autostopped",
	"function_build.log",
}

// reachable reports whether glob can match any event the relay emits: a
// catalogued type, or a member of the open families vm.<state> and
// webhook.<name>.
func reachable(glob string) bool {
	if glob == "*" {
		return true
	}
	for _, t := range Types {
		if globMatch(glob, t) {
			return true
		}
	}
	return matchesFamily(glob, KindVM+".") || matchesFamily(glob, KindWebhook+".")
}

// matchesFamily reports whether glob matches some prefix+token, a token
// being 1 or more of [A-Za-z0-9_-]. It walks the glob and that pattern
// together: state b < len(prefix) is inside the prefix, b == len(prefix)
// is right after it, and b == len(prefix)+1 is inside the token.
func matchesFamily(glob, prefix string) bool {
	inToken := len(prefix) + 1
	step := func(b int, c byte) (int, bool) {
		switch {
		case b < len(prefix):
			return b + 1, prefix[b] == c
		default:
			return inToken, tokenByte(c)
		}
	}
	type st struct{ g, b int }
	seen := map[st]bool{}
	var visit func(g, b int) bool
	visit = func(g, b int) bool {
		if seen[st{g, b}] {
			return false
		}
		seen[st{g, b}] = true
		if g == len(glob) {
			return b == inToken
		}
		if glob[g] != '*' {
			nb, ok := step(b, glob[g])
			return ok && visit(g+1, nb)
		}
		// '*' matches nothing, or one more byte the pattern accepts here.
		if visit(g+1, b) {
			return true
		}
		next := inToken
		if b < len(prefix) {
			next = b + 1
		}
		return visit(g, next)
	}
	return visit(0, 0)
}

func tokenByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

// unreachableError explains a glob that no event can match, with the
// nearest catalogued type when one is close.
func unreachableError(glob string) error {
	if short, ok := strings.CutPrefix(glob, TypePrefix); ok && reachable(short) {
		return fmt.Errorf("event filter %q matches no event: filters use the short type without %q; did you mean %q?", glob, TypePrefix, short)
	}
	candidates := append([]string{"build.*", "vm.*", "webhook.*", "function_build.*", "*"}, Types...)
	best := suggest.Closest(glob, candidates, 3)
	msg := fmt.Sprintf("event filter %s matches no event the relay emits (types are build.created|succeeded|failed|stuck|log, vm.<state>|log|idle|autostopped, function_build.log, webhook.<receiver>)", confcheck.Echo(glob, false))
	if best != "" {
		msg += fmt.Sprintf("; did you mean %q?", best)
	}
	return fmt.Errorf("%s", msg)
}
