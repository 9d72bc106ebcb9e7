package config

import (
	"strings"
	"testing"
)

// check-config never echoes a value long enough to be a secret, whatever
// key it sits under (a token pasted under the wrong key, a misindented
// block): not whole, not in part.
func TestProblemsNeverQuoteASecretLengthValue(t *testing.T) {
	const secret = "sk_live_Zq8vR2mN4pT6wY0aC3eG5iK7mO9qS1u"
	frag := secret[8:20]
	env := func(string) (string, bool) { return "", false }
	for _, doc := range []string{
		"http: {read_timeout: " + secret + "}",
		"http: {listen: " + secret + "}",
		"bus: {subject_prefix: 'a " + secret + "'}",
		"bus: {stream: 'a." + secret + "'}",
		"bus: {embedded: {listen: " + secret + "}}",
		"log: {level: " + secret + "}",
		"log: {format: " + secret + "}",
		"poller: {vms: {schedule: " + secret + "}}",
		"poller: {watch_builds: ['" + secret + "!']}",
		"ingest: {webhooks: [{name: '" + secret + "!', insecure_no_auth: true}]}",
		"ingest: {webhooks: [{name: gh, hmac: {header: 'x " + secret + "', secret: s}}]}",
		"sinks: {http: [{name: a, url: 'https://x', events: ['" + secret + "']}]}",
		"sinks: {slack: [{name: '" + secret + "!', webhook_url: 'https://x', channel: '#x'}]}",
		"sinks: {autostop: {cached_vms: ['" + secret + "!']}}",
		"sinks: {http: [{name: " + secret + ", url: 'https://x'}, {name: " + secret + ", url: 'https://y'}]}",
	} {
		_, err := Parse([]byte(doc), env)
		if err == nil {
			t.Errorf("%s: accepted", doc)
			continue
		}
		if strings.Contains(err.Error(), frag) {
			t.Errorf("%s: the problem quotes the value:\n%s", doc, err)
		}
	}
}
