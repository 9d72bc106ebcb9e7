package config

import (
	"testing"
)

// A secret written as ${VAR} that expands to nothing is a forgotten
// variable: signing or auth would be off without a word. ${VAR:-} says
// empty is meant.
func TestEmptyVariableInSecretIsAnError(t *testing.T) {
	src := `
http:
  admin_token: ${ADMIN}
sinks:
  http:
    - name: app
      url: https://app.example.com/hook
      secret: ${CALLBACK_SECRET}
      headers: {X-Key: "${HEADER_KEY}"}
ingest:
  cakework:
    token: ${CW_TOKEN:-}
    insecure_no_auth: true
`
	_, err := Parse([]byte(src), envOf(map[string]string{"HEADER_KEY": ""}))
	ps := problemsOf(t, err)
	for _, c := range []struct{ path, v string }{
		{"http.admin_token", "ADMIN"},
		{"sinks.http[0].secret", "CALLBACK_SECRET"},
		{`sinks.http[0].headers["X-Key"]`, "HEADER_KEY"},
	} {
		if !hasProblem(ps, c.path, "${"+c.v+"} is empty") || !hasProblem(ps, c.path, "${"+c.v+":-}") {
			t.Errorf("no problem at %s naming ${%s} and the ${%s:-} way out:\n%v", c.path, c.v, c.v, ps)
		}
	}
	if hasProblem(ps, "ingest.cakework.token", "") {
		t.Errorf("${CW_TOKEN:-} is an explicit empty secret, not a problem:\n%v", ps)
	}
	// Set, it is fine; outside secrets, ${VAR} may be empty as before.
	mustParse(t, `
http: {admin_token: "${ADMIN}"}
bus: {url: "${NATS_URL}"}
`, map[string]string{"ADMIN": "a-token"})
}

func TestFilterThatMatchesNothingIsAnError(t *testing.T) {
	src := `
sinks:
  http:
    - name: app
      url: https://app.example.com/hook
      secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw
      events: ["com.cakework.build.failed", "build.suceeded", "vm.*", "webhook.github", "*.log", "buidl.*", "function_build.failed"]
`
	_, err := Parse([]byte(src), nil)
	ps := problemsOf(t, err)
	for _, c := range []struct{ path, msg string }{
		{"sinks.http[0].events[0]", `did you mean "build.failed"`},
		{"sinks.http[0].events[1]", `did you mean "build.succeeded"`},
		{"sinks.http[0].events[5]", `did you mean "build.*"`},
		{"sinks.http[0].events[6]", `matches no event`},
	} {
		if !hasProblem(ps, c.path, c.msg) {
			t.Errorf("no problem at %s saying %q:\n%v", c.path, c.msg, ps)
		}
	}
	for _, i := range []string{"2", "3", "4"} {
		if hasProblem(ps, "sinks.http[0].events["+i+"]", "") {
			t.Errorf("events[%s] can match and is not a problem:\n%v", i, ps)
		}
	}
	if len(ps) != 4 {
		t.Errorf("%d problems, want 4:\n%v", len(ps), ps)
	}
}

// Templates run against a sample of every type their key matches, as the
// Slack sink does at startup: what check-config passes, serve accepts.
func TestSlackTemplatesAreExecuted(t *testing.T) {
	src := `
sinks:
  slack:
    - name: s
      webhook_url: https://hooks.slack.com/services/T/B/X
      templates:
        build.failed: "Build {{.Subject}} failed"
        "vm.*": "{{.ID}} idle since {{.IdleSince}}"
        build.succeeded: "{{.ID}} built {{.ImageID}} {{.Data.anything}}"
        "*": "{{.Nope}}"
`
	_, err := Parse([]byte(src), nil)
	ps := problemsOf(t, err)
	if !hasProblem(ps, `sinks.slack[0].templates["build.failed"]`, "Subject") ||
		!hasProblem(ps, `sinks.slack[0].templates["build.failed"]`, ".ID") {
		t.Errorf("{{.Subject}} not refused with the fields a template sees:\n%v", ps)
	}
	if !hasProblem(ps, `sinks.slack[0].templates["*"]`, "Nope") {
		t.Errorf("{{.Nope}} not refused:\n%v", ps)
	}
	if len(ps) != 2 {
		t.Errorf("%d problems, want 2:\n%v", len(ps), ps)
	}
}
