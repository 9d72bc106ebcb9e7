package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/cakework-relay/cakework-relay/internal/cakework/cakeworksim"
)

// defaultSimKey is printed freely; any other key is treated as a secret.
const defaultSimKey = "sim-key"

// runSimulate serves only the Cakework-compatible simulator until ctx ends.
func runSimulate(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("simulate", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:8081", "address to serve the simulated Cakework API on")
	envKey := os.Getenv("CAKEWORK_API_KEY")
	apiKey := fs.String("api-key", "", "X-Api-Key the simulator requires (default $CAKEWORK_API_KEY, else \""+defaultSimKey+"\")")
	workload := fs.Bool("workload", false, "run a synthetic workload: builds that pass and fail, VMs that log and go idle")
	buildEvery := fs.Duration("build-every", 10*time.Second, "workload: start a build this often")
	vmEvery := fs.Duration("vm-every", 8*time.Second, "workload: start a VM this often")
	failRatio := fs.Float64("fail-ratio", 0.3, "workload: share of builds that fail (0-1)")
	idleRatio := fs.Float64("idle-ratio", 0.4, "workload: share of VMs that go idle and stay up (0-1)")
	buildDuration := fs.Duration("build-duration", 5*time.Second, "how long a build runs before it succeeds or fails")
	webhookURL := fs.String("webhook-url", "", "POST build webhooks here (split mode: <url>/build/succeeded and <url>/build/failed,\nwith any ?token=... kept after the path)")
	webhookSecret := fs.String("webhook-secret", "", "sign webhooks with this Standard Webhooks secret (whsec_...)")
	webhookMode := fs.String("webhook-mode", cakeworksim.WebhookSplit, "split: two target paths with Cakework's bare shapes; single: one URL")
	webhookRetryFor := fs.Duration("webhook-retry-for", cakeworksim.DefaultWebhookRetryFor,
		"retry a failed build webhook this long, backing off up to 5s between attempts,\nso one sent while the relay restarts is not lost (0: one attempt)")
	destroyedTTL := fs.Duration("destroyed-ttl", 10*time.Minute, "destroyed VMs vanish from listVMs and getVM after this long (0 keeps them)")
	seed := fs.Uint64("seed", uint64(time.Now().UnixNano()), "random seed, for a reproducible run")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: relay simulate [flags]\n\nServe an in-memory Cakework API for local runs and tests.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if code, ok := parseFlags(fs, args, stderr); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "relay simulate: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	keyFrom := "-api-key"
	if *apiKey == "" {
		*apiKey, keyFrom = envKey, "$CAKEWORK_API_KEY"
	}
	if *apiKey == "" {
		*apiKey, keyFrom = defaultSimKey, ""
	}
	var problems []string
	if *failRatio < 0 || *failRatio > 1 {
		problems = append(problems, "-fail-ratio must be between 0 and 1")
	}
	if *idleRatio < 0 || *idleRatio > 1 {
		problems = append(problems, "-idle-ratio must be between 0 and 1")
	}
	if *destroyedTTL < 0 {
		problems = append(problems, "-destroyed-ttl must not be negative")
	}
	if *buildDuration <= 0 {
		problems = append(problems, "-build-duration must be positive")
	}
	if *webhookMode != cakeworksim.WebhookSplit && *webhookMode != cakeworksim.WebhookSingle {
		problems = append(problems, "-webhook-mode must be split or single")
	}
	if *webhookRetryFor < 0 {
		problems = append(problems, "-webhook-retry-for must not be negative (0: one attempt)")
	}
	if *webhookSecret != "" {
		if *webhookURL == "" {
			problems = append(problems, "-webhook-secret needs -webhook-url")
		}
		if _, err := standardwebhooks.NewWebhook(*webhookSecret); err != nil || !strings.HasPrefix(*webhookSecret, "whsec_") {
			problems = append(problems, "-webhook-secret must be whsec_ followed by base64")
		}
	}
	if *webhookURL != "" {
		if err := cakeworksim.CheckWebhookURL(*webhookURL); err != nil {
			problems = append(problems, "-webhook-url: "+err.Error())
		}
	}
	if len(problems) > 0 {
		for _, p := range problems {
			fmt.Fprintln(stderr, "relay simulate:", p)
		}
		return 2
	}

	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	sim := cakeworksim.New(cakeworksim.Options{
		APIKey:          *apiKey,
		Seed:            *seed,
		BuildDuration:   *buildDuration,
		BuildFailRatio:  *failRatio,
		DestroyedTTL:    *destroyedTTL,
		WebhookURL:      *webhookURL,
		WebhookSecret:   *webhookSecret,
		WebhookMode:     *webhookMode,
		WebhookRetryFor: simRetryFor(*webhookRetryFor),
		Logger:          logger,
	})
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintf(stderr, "relay simulate: listen on %s: %v (pick another address with -listen)\n", *listen, err)
		return 1
	}
	base := "http://" + ln.Addr().String()
	shownKey := *apiKey
	if keyFrom != "" {
		// Never echo a key the user supplied; it may be a real one.
		shownKey = "<the key from " + keyFrom + ">"
	}
	fmt.Fprintf(stdout, `Cakework simulator listening on %s
  API key: %s
  workload: %v

Point a relay at it:
  CAKEWORK_API_KEY=%s relay serve -config relay.yaml
with relay.yaml containing:
  cakework:
    url: %s
    api_key: ${CAKEWORK_API_KEY}

Or call it directly:
  curl -H 'X-Api-Key: %s' %s/v1/vms
`, base, shownKey, *workload, shownKey, base, shownKey, base)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go sim.Run(ctx, 250*time.Millisecond) // state machine ticks and webhooks
	if *workload {
		go sim.RunWorkload(ctx, cakeworksim.WorkloadOptions{
			BuildEvery: *buildEvery, VMEvery: *vmEvery, FailRatio: *failRatio, IdleRatio: *idleRatio,
		})
	}
	srv := &http.Server{Handler: sim.Handler(), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		fmt.Fprintf(stderr, "relay simulate: %v\n", err)
		return 1
	case <-ctx.Done():
	}
	shutdownCtx, done := context.WithTimeout(context.Background(), 5*time.Second)
	defer done()
	if err := srv.Shutdown(shutdownCtx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		fmt.Fprintf(stderr, "relay simulate: shutdown: %v\n", err)
		return 1
	}
	return 0
}

// simRetryFor maps -webhook-retry-for to Options.WebhookRetryFor, where 0
// means the default and a negative value one attempt.
func simRetryFor(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}
