package event

import (
	"fmt"
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

// closedActions are the only build and function build types (function
// builds only have logs).
var closedActions = map[string]bool{
	"build.created": true, "build.succeeded": true, "build.failed": true, "build.stuck": true, "build.log": true,
	"function_build.log": true,
}

// possible reports whether some event could have short type s.
func possible(s string) bool {
	kind, action, ok := strings.Cut(s, ".")
	if !ok {
		return false
	}
	switch kind {
	case KindBuild, KindFunctionBuild:
		return closedActions[s]
	case KindVM, KindWebhook:
		return ValidToken(action)
	}
	return false
}

// reachable reports whether glob can match any event the relay emits. A
// glob is reachable if it matches a catalogued type, or if filling its
// stars with "" or "x" gives a possible type (vm.<state> and
// webhook.<name> are open families).
func reachable(glob string) bool {
	if glob == "*" {
		return true
	}
	for _, t := range Types {
		if globMatch(glob, t) {
			return true
		}
	}
	return possible(strings.ReplaceAll(glob, "*", "")) || possible(strings.ReplaceAll(glob, "*", "x"))
}

// unreachableError explains a glob that no event can match, with the
// nearest catalogued type when one is close.
func unreachableError(glob string) error {
	if short, ok := strings.CutPrefix(glob, TypePrefix); ok && reachable(short) {
		return fmt.Errorf("event filter %q matches no event: filters use the short type without %q; did you mean %q?", glob, TypePrefix, short)
	}
	candidates := append([]string{"build.*", "vm.*", "webhook.*", "function_build.*", "*"}, Types...)
	best := suggest.Closest(glob, candidates, 3)
	msg := fmt.Sprintf("event filter %q matches no event the relay emits (types are build.created|succeeded|failed|stuck|log, vm.<state>|log|idle|autostopped, function_build.log, webhook.<receiver>)", glob)
	if best != "" {
		msg += fmt.Sprintf("; did you mean %q?", best)
	}
	return fmt.Errorf("%s", msg)
}
