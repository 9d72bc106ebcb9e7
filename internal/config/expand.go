package config

import (
	"errors"
	"strings"
)

// expand replaces ${VAR} and ${VAR:-default} in s from env. "$$" is a
// literal "$", and a "$" followed by anything else stays as it is. ${VAR}
// with VAR unset is empty; ${VAR:-default} uses default when VAR is unset or
// empty, as in the shell. Defaults are literal: they are not expanded again,
// and neither are values taken from the environment.
//
// Errors never quote s, because s may be a secret.
func expand(s string, env func(string) (string, bool)) (string, error) {
	out, _, err := expandReport(s, env)
	return out, err
}

// expandReport is expand, and also names the variables written as ${VAR}
// (no default) that came out empty: in a secret, that is almost always a
// variable the user forgot to set, and ${VAR:-} says empty is meant.
func expandReport(s string, env func(string) (string, bool)) (string, []string, error) {
	if !strings.Contains(s, "$") {
		return s, nil, nil
	}
	var empty []string
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); {
		c := s[i]
		if c != '$' || i+1 == len(s) {
			b.WriteByte(c)
			i++
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i += 2
		case '{':
			end := strings.IndexByte(s[i+2:], '}')
			if end < 0 {
				return "", nil, errors.New(`unterminated "${" (close it with "}", or write "$$" for a literal "$")`)
			}
			expr := s[i+2 : i+2+end]
			name, def, hasDef := strings.Cut(expr, ":-")
			if !validVarName(name) {
				return "", nil, errors.New(`bad "${...}": use ${NAME} or ${NAME:-default}, NAME made of letters, digits and _ (write "$$" for a literal "$")`)
			}
			if strings.Contains(def, "${") {
				return "", nil, errors.New(`bad "${...}": a default cannot contain another "${...}"`)
			}
			v, ok := env(name)
			if hasDef && (!ok || v == "") {
				v = def
			}
			if !hasDef && v == "" {
				empty = append(empty, name)
			}
			b.WriteString(v)
			i += 2 + end + 1
		default:
			b.WriteByte('$')
			i++
		}
	}
	return b.String(), empty, nil
}

func validVarName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '_', 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z':
		case '0' <= c && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// noEnv is the empty environment, used when a caller passes a nil env.
func noEnv(string) (string, bool) { return "", false }
