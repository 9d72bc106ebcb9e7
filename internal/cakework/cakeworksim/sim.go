package cakeworksim

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/cakework-relay/cakework-relay/internal/cakework"
	"github.com/cakework-relay/cakework-relay/internal/clock"
)

// Route names, the same as the reference's call names.
const (
	RouteImportImage          = "importImage"
	RouteBuildImageFromFiles  = "buildImageFromFiles"
	RouteBuildImageFromGithub = "buildImageFromGithub"
	RouteGetBuild             = "getBuild"
	RouteGetBuildLogs         = "getBuildLogs"
	RouteStartVM              = "startVM"
	RouteStopVM               = "stopVM"
	RouteGetVM                = "getVM"
	RouteListVMs              = "listVMs"
	RouteGetVMLogs            = "getVMLogs"
	RouteCacheVM              = "cacheVM"
	RouteStartCachedVM        = "startCachedVM"
	RouteStopCachedVM         = "stopCachedVM"
	RouteDestroyCachedVM      = "destroyCachedVM"
	RouteGetCachedVMLogs      = "getCachedVMLogs"
	RouteGetFunctionBuildLogs = "getFunctionBuildLogs"
	// RouteUnknown counts requests that matched no route.
	RouteUnknown = "unknown"
)

// Webhook delivery modes.
const (
	// WebhookSplit posts the bare shapes Cakework sent to two targets:
	// <url>/build/succeeded {buildId, imageId} and <url>/build/failed {buildId}.
	WebhookSplit = "split"
	// WebhookSingle posts to <url> itself: {buildId, imageId} on success,
	// {buildId, status: "failed"} on failure.
	WebhookSingle = "single"
)

// Options configure a Sim. Zero values take the defaults shown.
type Options struct {
	// APIKey is the X-Api-Key every request must carry; "" accepts any.
	APIKey string
	// Clock is the sim's only source of time; default wall clock.
	Clock clock.Clock
	// Seed makes ids, failures and faults reproducible; default 1.
	Seed uint64

	// BuildDuration is how long a build stays created; default 3s.
	BuildDuration time.Duration
	// BuildLogEvery is the gap between build log lines; default 500ms.
	BuildLogEvery time.Duration
	// BuildFailRatio is the share of API-created builds that fail. A
	// Dockerfile containing "sim:fail" always fails, "sim:succeed" never.
	BuildFailRatio float64
	// VMLogEvery is the gap between log lines of a started, busy VM;
	// default 2s.
	VMLogEvery time.Duration
	// DestroyedTTL drops destroyed VMs from the sim (listVMs and getVM) this
	// long after they were destroyed; 0 keeps them.
	DestroyedTTL time.Duration

	// ListPageSize is the listVMs page size; default 100.
	ListPageSize int
	// LogBatchMin is the smallest log batch honoured (smaller ones are
	// raised to it); default 50 as in the API. Tests may set 1.
	LogBatchMin int

	// WebhookURL, when set, receives a POST when a build finishes.
	WebhookURL string
	// WebhookSecret (whsec_...) signs webhooks per Standard Webhooks. Real
	// Cakework webhooks were unsigned.
	WebhookSecret string
	// WebhookMode is WebhookSplit (default) or WebhookSingle.
	WebhookMode string
	// WebhookRetryFor is how long a failed webhook is retried, backing off
	// between attempts on Clock (Step sends what is due); default
	// DefaultWebhookRetryFor. Negative: one attempt only.
	WebhookRetryFor time.Duration
	// HTTPClient sends webhooks; default a client with a 10s timeout.
	HTTPClient *http.Client

	Logger *slog.Logger
}

// Sim is an in-memory Cakework API. It is safe for concurrent use.
type Sim struct {
	opts   Options
	clk    clock.Clock
	log    *slog.Logger
	hc     *http.Client
	signer *standardwebhooks.Webhook
	mux    *http.ServeMux

	mu     sync.Mutex
	rnd    *rand.Rand
	builds map[string]*simBuild
	active map[string]struct{} // builds the state machine still moves
	vms    map[string]*simVM
	images map[string]struct{}
	logs   map[logKey]*stream
	calls  map[string]int
	// stopsDone counts stopVM calls that stopped a VM (not the 409s).
	stopsDone    int
	faults       Faults
	listPageSize int
	webhooks     []pendingWebhook
}

type simBuild struct {
	b        cakework.Build
	fail     bool
	pinned   bool // status set by hand; the state machine leaves it alone
	finishAt time.Time
	nextLog  time.Time
	step     int
}

type simVM struct {
	v       cakework.VM
	cached  bool
	quiet   bool
	quietAt time.Time // zero: never goes quiet by itself
	nextLog time.Time
	n       int
}

// New returns a Sim. An unusable WebhookSecret is logged and the raw string
// is used as the key, so a typo shows up as failed verification at the
// receiver rather than as a crash here.
func New(opts Options) *Sim {
	if opts.Clock == nil {
		opts.Clock = clock.Real{}
	}
	if opts.Seed == 0 {
		opts.Seed = 1
	}
	if opts.BuildDuration <= 0 {
		opts.BuildDuration = 3 * time.Second
	}
	if opts.BuildLogEvery <= 0 {
		opts.BuildLogEvery = 500 * time.Millisecond
	}
	if opts.VMLogEvery <= 0 {
		opts.VMLogEvery = 2 * time.Second
	}
	if opts.ListPageSize <= 0 {
		opts.ListPageSize = 100
	}
	if opts.LogBatchMin <= 0 {
		opts.LogBatchMin = cakework.MinLogBatch
	}
	if opts.WebhookMode == "" {
		opts.WebhookMode = WebhookSplit
	}
	if opts.WebhookRetryFor == 0 {
		opts.WebhookRetryFor = DefaultWebhookRetryFor
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Sim{
		opts:         opts,
		clk:          opts.Clock,
		log:          opts.Logger,
		hc:           opts.HTTPClient,
		rnd:          rand.New(rand.NewPCG(opts.Seed, opts.Seed^0x9e3779b97f4a7c15)),
		builds:       map[string]*simBuild{},
		active:       map[string]struct{}{},
		vms:          map[string]*simVM{},
		images:       map[string]struct{}{},
		logs:         map[logKey]*stream{},
		calls:        map[string]int{},
		listPageSize: opts.ListPageSize,
	}
	if s.hc == nil {
		s.hc = &http.Client{Timeout: 10 * time.Second}
	}
	if opts.WebhookSecret != "" {
		wh, err := standardwebhooks.NewWebhook(opts.WebhookSecret)
		if err != nil {
			s.log.Warn("webhook secret is not whsec_<base64>; signing with the raw string", "err", err)
			wh, _ = standardwebhooks.NewWebhookRaw([]byte(opts.WebhookSecret))
		}
		s.signer = wh
	}
	s.mux = http.NewServeMux()
	for _, r := range []struct {
		pattern, route string
		h              http.HandlerFunc
	}{
		{"POST /v1/image/import", RouteImportImage, s.importImage},
		{"POST /v1/image/build/files", RouteBuildImageFromFiles, s.buildFromFiles},
		{"POST /v1/image/build/github", RouteBuildImageFromGithub, s.buildFromGithub},
		{"GET /v1/image/build/{id}", RouteGetBuild, s.getBuild},
		{"GET /v1/image/build/{id}/logs", RouteGetBuildLogs, s.logsHandler(RouteGetBuildLogs, cakework.LogBuild)},
		{"POST /v1/vm/start", RouteStartVM, s.startVM},
		{"POST /v1/vm/{id}/stop", RouteStopVM, s.stopVM},
		{"GET /v1/vm/{id}", RouteGetVM, s.getVM},
		{"GET /v1/vms", RouteListVMs, s.listVMs},
		{"GET /v1/vm/{id}/logs", RouteGetVMLogs, s.logsHandler(RouteGetVMLogs, cakework.LogVM)},
		{"POST /v1/vm/cache", RouteCacheVM, s.cacheVM},
		{"POST /v1/vm/cached/{id}/start", RouteStartCachedVM, s.startCachedVM},
		{"POST /v1/vm/cached/{id}/stop", RouteStopCachedVM, s.stopCachedVM},
		{"POST /v1/vm/cached/{id}/destroy", RouteDestroyCachedVM, s.destroyCachedVM},
		// The published client's route; the docs moved it under /cached.
		{"POST /v1/vm/{id}/destroy", RouteDestroyCachedVM, s.destroyCachedVM},
		{"GET /v1/vm/cached/{id}/logs", RouteGetCachedVMLogs, s.logsHandler(RouteGetCachedVMLogs, cakework.LogCachedVM)},
		{"GET /v1/function/build/{id}/logs", RouteGetFunctionBuildLogs, s.logsHandler(RouteGetFunctionBuildLogs, cakework.LogFunctionBuild)},
	} {
		s.mux.Handle(r.pattern, s.wrap(r.route, r.h))
	}
	s.mux.Handle("/", s.wrap(RouteUnknown, func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, ShapeError, "no route for "+r.Method+" "+r.URL.Path)
	}))
	return s
}

// Handler serves the API. Mount it in an httptest.Server or an http.Server.
func (s *Sim) Handler() http.Handler { return s.mux }

// Routes lists every route name the sim serves.
func Routes() []string {
	return []string{
		RouteImportImage, RouteBuildImageFromFiles, RouteBuildImageFromGithub, RouteGetBuild, RouteGetBuildLogs,
		RouteStartVM, RouteStopVM, RouteGetVM, RouteListVMs, RouteGetVMLogs,
		RouteCacheVM, RouteStartCachedVM, RouteStopCachedVM, RouteDestroyCachedVM, RouteGetCachedVMLogs,
		RouteGetFunctionBuildLogs,
	}
}

// ---- wire shapes: each route answers times in the form the reference shows
// for it, so a client meets all of them.

func fmtNoZone(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05.000") }
func fmtZ(t time.Time) string      { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

var pacific = time.FixedZone("PST", -8*3600)

func fmtOffset(t time.Time) string { return t.In(pacific).Format("2006-01-02T15:04:05.000-07:00") }

type wireBuild struct {
	BuildID   string `json:"buildId"`
	ImageID   string `json:"imageId,omitempty"`
	Status    string `json:"status"`
	CreatedAt string `json:"createdAt"`
	UpdatedAt string `json:"updatedAt"`
}

func toWireBuild(b cakework.Build) wireBuild {
	return wireBuild{b.BuildID, b.ImageID, b.Status, fmtNoZone(b.CreatedAt), fmtNoZone(b.UpdatedAt)}
}

type wireVM struct {
	ID        string `json:"id"`
	Hostname  string `json:"hostname"`
	CPU       int    `json:"cpu"`
	Memory    int    `json:"memory"`
	ImageID   string `json:"imageId"`
	State     string `json:"state"`
	Port      *int   `json:"port,omitempty"`
	VolumeGB  *int   `json:"volumeGB,omitempty"`
	VolumeGb  *int   `json:"volumeGb,omitempty"`
	CreatedAt string `json:"createdAt"`
	UpdatedAt string `json:"updatedAt"`
}

// toWireVM renders v with times in format and the volume spelled
// volumeGB, or volumeGb when lowerGb (as the published client had it).
func toWireVM(v cakework.VM, format func(time.Time) string, lowerGb bool) wireVM {
	w := wireVM{ID: v.ID, Hostname: v.Hostname, CPU: v.CPU, Memory: v.Memory, ImageID: v.ImageID,
		State: v.State, Port: v.Port, CreatedAt: format(v.CreatedAt), UpdatedAt: format(v.UpdatedAt)}
	if v.VolumeGB > 0 {
		vol := v.VolumeGB
		if lowerGb {
			w.VolumeGb = &vol
		} else {
			w.VolumeGB = &vol
		}
	}
	return w
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func readJSON(r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, 8<<20))
	return dec.Decode(v)
}

// ---- ids

const crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// ulid makes a 26-character id in the style of Cakework's image ids. Call
// with s.mu held.
func (s *Sim) ulid() string {
	var b strings.Builder
	for range 26 {
		b.WriteByte(crockford[s.rnd.IntN(len(crockford))])
	}
	return b.String()
}

func (s *Sim) hex(n int) string {
	const digits = "0123456789abcdef"
	var b strings.Builder
	for range n {
		b.WriteByte(digits[s.rnd.IntN(16)])
	}
	return b.String()
}

func (s *Sim) uuid() string {
	h := s.hex(32)
	return fmt.Sprintf("%s-%s-%s-%s-%s", h[:8], h[8:12], h[12:16], h[16:20], h[20:])
}

// ---- the state machine

// advance moves every build and VM to now: build logs and outcomes, VM logs,
// idle VMs going quiet, destroyed VMs expiring. Call with s.mu held. It is
// run before every request, so the API is consistent with the clock even
// when nobody calls Step.
func (s *Sim) advance(now time.Time) {
	ids := make([]string, 0, len(s.active))
	for id := range s.active {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		b := s.builds[id]
		if b == nil || b.pinned || b.b.Finished() {
			delete(s.active, id)
			continue
		}
		for !b.nextLog.After(now) && b.nextLog.Before(b.finishAt) {
			s.appendLog(logKey{cakework.LogBuild, id}, b.nextLog, "info", buildStep(b.step))
			b.step++
			b.nextLog = b.nextLog.Add(s.opts.BuildLogEvery)
		}
		if now.Before(b.finishAt) {
			continue
		}
		if b.fail {
			s.appendLog(logKey{cakework.LogBuild, id}, b.finishAt, "error", buildFailLine)
			s.finishBuild(b, cakework.BuildFailed, "", b.finishAt)
		} else {
			s.appendLog(logKey{cakework.LogBuild, id}, b.finishAt, "info", "Successfully built and pushed image")
			s.finishBuild(b, cakework.BuildSucceeded, s.ulid(), b.finishAt)
		}
		delete(s.active, id)
	}
	every := s.opts.VMLogEvery
	for id, v := range s.vms {
		if v.v.State == cakework.VMDestroyed && s.opts.DestroyedTTL > 0 && !v.v.UpdatedAt.Add(s.opts.DestroyedTTL).After(now) {
			delete(s.vms, id)
			continue
		}
		if v.v.State != cakework.VMStarted || v.quiet {
			continue
		}
		// Catch up, but never write more than 1000 lines in one go after a
		// big clock jump.
		if lag := now.Sub(v.nextLog); lag > 1000*every {
			v.nextLog = now.Add(-1000 * every)
		}
		for !v.nextLog.After(now) {
			if !v.quietAt.IsZero() && !v.nextLog.Before(v.quietAt) {
				v.quiet = true
				break
			}
			level, msg := vmLine(v.n)
			s.appendLog(logKey{cakework.LogVM, id}, v.nextLog, level, msg)
			v.n++
			v.nextLog = v.nextLog.Add(every)
		}
		if !v.quietAt.IsZero() && !now.Before(v.quietAt) {
			v.quiet = true
		}
	}
}

// finishBuild sets a final status and queues its webhook. Call with s.mu held.
func (s *Sim) finishBuild(b *simBuild, status, imageID string, at time.Time) {
	b.b.Status = status
	b.b.ImageID = imageID
	b.b.UpdatedAt = at.UTC()
	if imageID != "" {
		s.images[imageID] = struct{}{}
	}
	if s.opts.WebhookURL != "" && b.b.Finished() {
		s.webhooks = append(s.webhooks, pendingWebhook{buildID: b.b.BuildID, status: status, imageID: imageID})
	}
}

var buildSteps = []string{
	"#1 [internal] load build definition from Dockerfile",
	"#2 [internal] load metadata for docker.io/library/python:3.11-slim",
	"#3 [1/5] FROM docker.io/library/python:3.11-slim",
	"#4 [2/5] WORKDIR /app",
	"#5 [3/5] COPY requirements.txt .",
	"#6 [4/5] RUN pip install -r requirements.txt",
	"#6 Collecting flask==2.2.3",
	"#6 Installing collected packages: flask",
	"#7 [5/5] COPY . .",
	"#8 exporting to image",
}

const buildFailLine = `ERROR: failed to solve: process "/bin/sh -c pip install -r requirements.txt" did not complete successfully: exit code: 1`

func buildStep(i int) string { return buildSteps[i%len(buildSteps)] }

var vmLines = []struct{ level, msg string }{
	{"info", `[proxy] 10.0.0.1 "GET /health HTTP/1.1" 200 2ms`},
	{"info", "app: handled job"},
	{"info", `[proxy] 10.0.0.7 "POST /run HTTP/1.1" 200 184ms`},
	{"warn", "app: slow response from upstream"},
	{"info", "[hypervisor] heartbeat ok"},
}

func vmLine(n int) (level, msg string) {
	l := vmLines[n%len(vmLines)]
	return l.level, l.msg
}
