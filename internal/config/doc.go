// Package config loads, defaults and validates the relay's YAML
// configuration. config.example.yaml at the repository root lists every key
// with its default.
//
// # Who owns what
//
// Each component owns its section: the struct (with its yaml and secret
// tags), its defaults (WithDefaults, and Defaults where a default is not the
// zero value) and its rules (Validate, reporting into a confcheck.Checker
// with key paths relative to the section):
//
//	http            httpapi.Config
//	bus             bus.Config
//	ingest          ingest.Config (receivers, HMAC, EnvWebhookSecret)
//	poller          poller.Config (vms, builds, logs; ParseSchedule)
//	sinks.slack[]   slack.Config (flood, templates)
//	sinks.http[]    httpcb.Config
//	...retry        sinks.RetryConfig; sinks.CheckName, sinks.CheckEvents
//	sinks.autostop  autostop.Config (the key predates the package's move)
//
// This package owns the rest: the top-level Config that composes the
// sections by key, data_dir, log and cakework, the decoder (${VAR}
// expansion, secret tags, unknown keys and suggestions), the environment
// fallbacks, the rules that span sections (sink names unique across kinds
// and not reserved, auto-stop needing an API key), Redacted and Summary. It
// calls each section's defaults and Validate at the section's key path, so
// a section reports "channel: required" and check-config prints
// "sinks.slack[0].channel: required". Imports go config -> components; no
// component imports this package.
//
// Constructors (slack.New, httpcb.New, ingest.New, autostop.New) apply the
// same WithDefaults and run the same Validate as a guard, so a Config built
// in code gets the defaults a loaded one gets, and serve cannot accept or
// refuse what check-config does not (internal/app's agreement test runs
// every shipped and every bad config through both).
//
// # Loading
//
// Load(path, env) reads a file, Parse(data, env) takes its bytes, and
// Default(env) is the configuration with no file. env is how the environment
// is read (os.LookupEnv in the daemon, a map in tests); nil is an empty
// environment. Load and Parse return a validated *Config, or Problems: every
// problem in the file at once, each as "key.path: what is wrong (how to
// fix)". Load("", env) is Default(env), validated.
//
// # Expansion
//
// ${VAR} and ${VAR:-default} expand from the environment in scalar values,
// never in keys. The file is parsed first and each value is expanded on its
// own, so an environment value is always exactly one value: whatever YAML it
// contains is text, and cannot add keys or change structure. ${VAR} with VAR
// unset expands to "" (which then takes the key's default, see below).
// ${VAR:-default} uses default when VAR is unset or empty, as in the shell;
// the default is literal and cannot contain another ${...}. "$$" is a literal
// "$"; a "$" followed by anything but "{" or "$" stays as it is. An
// unterminated "${" or a bad variable name is a problem at that key. In a
// secret (a field tagged secret:"true"), ${VAR} that expands to "" is a
// problem too: it is almost always a variable left unset, and it would turn
// signing or auth off without a word. ${VAR:-} says empty is meant.
// Expanded values are typed by the key they are under: `batch: ${BATCH:-500}`
// is a number, `vms: ${TAIL_VMS:-true}` a boolean. Inside flow style
// ({a: b}, [a, b]) YAML reads "{" and "}" as structure, so quote values that
// use ${...} there: `retry: {max_attempts: "${ATTEMPTS:-12}"}`.
//
// # Structure
//
// Unknown keys are problems, with a suggestion when one is close. Values
// must have the key's type: durations are Go durations (500ms, 30s, 5m, 1h),
// booleans are true or false, whole numbers are whole. A key written twice is
// a problem. Anchors, aliases and merge keys (<<: *base) work. The file holds
// one YAML document whose top level is a mapping; an empty file is all
// defaults.
//
// # Defaults
//
// A key the file leaves out, or sets to null, keeps its default. A key set to
// an empty string, or to 0, also gets its default, except where empty
// means something: bus.url (embedded NATS), bus.embedded.listen ("" is
// in-process only), bus.embedded.token, poller.jitter (0 is none), the
// secrets and tokens, and booleans (logs.vms and logs.builds default to true
// and false turns them off). Each list element (sinks.slack[i],
// sinks.http[i], ingest.webhooks[i].hmac) gets its own defaults after
// decoding, and an empty events list means ["*"]. bus.duplicate_window's
// default depends on bus.url, so it stays 0 in the Config and is resolved
// where it is read (bus.Config's Window): a Config built in code that sets
// Bus.URL after Default gets the window a file with that url gets.
//
// # Environment fallbacks
//
// With or without a file, three settings come from the environment when the
// configuration leaves them empty: cakework.api_key from CAKEWORK_API_KEY
// (empty: the poller is off), http.admin_token from RELAY_ADMIN_TOKEN (empty:
// the admin API is off), and ingest.cakework.secret from
// CAKEWORK_WEBHOOK_SECRET when the file sets neither a secret nor a token for
// that receiver.
//
// # The Cakework receiver
//
// CakeworkReceiver.Configured is true when the file has an ingest.cakework
// key (even with an empty value). A configured receiver with no secret, no
// token and no insecure_no_auth is a problem, so the relay refuses to start.
// An unconfigured one is on when CAKEWORK_WEBHOOK_SECRET is set, and off
// (503) otherwise. insecure_no_auth matters only when there is no auth.
//
// # Schedules
//
// Poller schedules are parsed by poller.ParseSchedule: cron with five
// fields, or six with a leading seconds field, and descriptors such as "@every 15s" and
// "@hourly" (robfig/cron/v3 with SecondOptional and Descriptor). They run in
// UTC, so TZ= prefixes are refused. Validation and the poller use the same
// function, so what check-config accepts is what runs.
//
// # Secrets
//
// Fields tagged secret:"true" are never quoted in a problem, whatever is
// wrong with them, and read "REDACTED" in Redacted(). Map fields tagged
// secret (sinks.http[].headers) have every value treated as secret. URLs are
// never quoted in problems either, since they may carry credentials.
//
// # Templates
//
// sinks.slack[].templates are checked by slack.Config.Validate with
// headline.Parse, the function the Slack sink renders with: a template that
// names a field that does not exist is refused by both.
package config
