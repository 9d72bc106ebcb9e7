package slack

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	goslack "github.com/slack-go/slack"

	"github.com/cakework-relay/cakework-relay/internal/clock"
	"github.com/cakework-relay/cakework-relay/internal/event"
	"github.com/cakework-relay/cakework-relay/internal/sinks"
	"github.com/cakework-relay/cakework-relay/internal/sinks/slack/headline"
	"github.com/cakework-relay/cakework-relay/internal/state"
)

// Options are the sink's dependencies.
type Options struct {
	// Store keeps parents, log tails and pending summaries, unless
	// Records is set (a fleet's shared bucket). One of them is required.
	Store   *state.Store
	Records sinks.Records
	Clock   clock.Clock
	// Logger is the sink's, scoped to it by the caller.
	Logger *slog.Logger
	// HTTPClient makes the Slack calls. Default: a client of its own.
	HTTPClient *http.Client
	// ConfigPath names the entry in errors ("sinks.slack[0]"). Default
	// "sinks.slack (<name>)".
	ConfigPath string
	// Timeout bounds one Slack call. Default 30s.
	Timeout time.Duration
	// ChannelInterval is the least time between two writes to a channel.
	// Default 1s; negative turns the limiter off.
	ChannelInterval time.Duration
}

// Sender posts events to one Slack channel. It is safe for concurrent use.
type Sender struct {
	cfg     Config
	path    string
	webhook bool
	api     *goslack.Client
	http    *http.Client
	ownHTTP bool
	store   sinks.Records
	clock   clock.Clock
	log     *slog.Logger
	user    event.Filter // the events the user asked for
	tmpl    headline.Set
	timeout time.Duration
	limiter *channelLimiter
	window  *floodWindow
	// retry is the framework's schedule for this sink (its Retry
	// settings): the flusher asks it when to try a failed summary or card
	// again, so the sink has no retry schedule of its own.
	retry sinks.Schedule

	// locks serialise work on one resource between a lane, a replay and
	// the flusher.
	locks [64]sync.Mutex

	mu      sync.Mutex
	authErr error
	lastGC  time.Time

	wake chan struct{}
	// active is the runner's Active (sinks.Activated): the flusher
	// posts and refreshes only while it is true.
	active atomic.Pointer[func() bool]

	// life is the background work's lifecycle: Connect starts it, Close
	// ends it.
	lifeMu    sync.Mutex
	connected bool
	closed    bool
	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
}

// New checks one sinks.slack entry and builds its sender. It starts
// nothing: Connect starts the background work, Close ends it.
func New(c Config, o Options) (*Sender, error) {
	if o.ConfigPath == "" {
		o.ConfigPath = "sinks.slack"
	}
	c = c.WithDefaults()
	if err := c.check(o.ConfigPath); err != nil {
		return nil, err
	}
	if c.APIURL != "" && !strings.HasSuffix(c.APIURL, "/") {
		// slack.OptionAPIURL appends method names to it.
		c.APIURL += "/"
	}
	if o.Records == nil {
		o.Records = sinks.BoltRecords(o.Store)
	}
	if o.Records == nil {
		return nil, fmt.Errorf("%s (%s): no state store", o.ConfigPath, c.Name)
	}
	tmpl, _ := headline.Parse(c.Templates) // checked by Validate
	user, _ := event.NewFilter(c.Events)
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.ChannelInterval == 0 {
		o.ChannelInterval = time.Second
	}
	s := &Sender{
		cfg: c, path: o.ConfigPath, webhook: c.WebhookURL != "",
		store: o.Records, clock: o.Clock, user: user, tmpl: tmpl, timeout: o.Timeout,
		log:     o.Logger,
		limiter: newChannelLimiter(o.Clock, o.ChannelInterval),
		window:  &floodWindow{recent: map[string][]time.Time{}},
		retry:   sinks.NewSchedule(c.Retry),
		wake:    make(chan struct{}, 1),
	}
	s.http = o.HTTPClient
	if s.http == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.ResponseHeaderTimeout = o.Timeout
		s.http = &http.Client{Transport: t}
		s.ownHTTP = true
	}
	if !s.webhook {
		opts := []goslack.Option{goslack.OptionHTTPClient(s.http)}
		if c.APIURL != "" {
			opts = append(opts, goslack.OptionAPIURL(c.APIURL))
		}
		s.api = goslack.New(c.Token, opts...)
	}
	return s, nil
}

// Connect starts the background work (sinks.Connector): the token check
// (auth.test, bot mode) and the flusher that posts flood summaries and
// refreshes stale cards, including those a previous run left pending. It
// runs until Close; ctx only bounds Connect itself, which does not wait.
func (s *Sender) Connect(ctx context.Context) error {
	s.lifeMu.Lock()
	defer s.lifeMu.Unlock()
	switch {
	case s.closed:
		return fmt.Errorf("slack sink %s: connect after close", s.cfg.Name)
	case s.connected:
		return nil
	}
	s.connected = true
	s.ctx, s.cancel = context.WithCancel(context.Background())
	if !s.webhook {
		s.wg.Add(1)
		go func() { defer s.wg.Done(); s.checkAuth() }()
	}
	s.wg.Add(1)
	go s.flushLoop()
	return nil
}

// SinkOptions are the framework options this entry asks for. Events always
// include build.log, whatever the user's filter: a failed build's message
// needs its last log lines. Send acks the ones the user didn't ask for
// without posting.
func (s *Sender) SinkOptions() sinks.Options {
	evs := slices.Clone(s.cfg.Events)
	if !s.user.Match("build.log") {
		evs = append(evs, "build.log")
	}
	endpoint := "Slack channel " + s.cfg.Channel
	if s.cfg.WebhookURL != "" {
		endpoint = "a Slack incoming webhook" // its URL is the secret
	}
	return sinks.Options{Name: s.cfg.Name, Kind: "slack", Endpoint: endpoint, Events: evs, Concurrency: s.cfg.Concurrency, Retry: s.cfg.Retry}
}

// Ready reports a token (or webhook) Slack rejected, for /readyz. It is
// nil until Slack said so, and again after a later call succeeds; Slack
// being unreachable does not make the relay unready.
func (s *Sender) Ready() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.authErr
}

func (s *Sender) setAuthErr(err error) {
	s.mu.Lock()
	s.authErr = err
	s.mu.Unlock()
}

// Close stops the background work (a summary being posted is cancelled and
// stays pending) and drops idle connections (sinks.Closer). It waits for
// the work to end until ctx does. Safe to call twice, and without Connect.
func (s *Sender) Close(ctx context.Context) error {
	s.lifeMu.Lock()
	first := !s.closed
	s.closed = true
	connected := s.connected
	if first && connected {
		s.cancel()
	}
	s.lifeMu.Unlock()
	if connected {
		done := make(chan struct{})
		go func() { s.wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
			return fmt.Errorf("slack sink %s: close: %w", s.cfg.Name, ctx.Err())
		}
	}
	if first && s.ownHTTP {
		s.http.CloseIdleConnections()
	}
	return nil
}

func (s *Sender) checkAuth() {
	ctx, cancel := context.WithTimeout(s.ctx, s.timeout)
	defer cancel()
	resp, err := s.api.AuthTestContext(ctx)
	switch {
	case err == nil:
		s.log.Info("slack token ok", "team", resp.Team, "bot", resp.User)
	case authCodes[slackCode(err)]:
		e := s.explain(fmt.Sprintf("slack sink %s: auth.test", s.cfg.Name), slackCode(err), err)
		s.setAuthErr(e)
		s.log.Error("slack token rejected; the sink's events will be dead-lettered until it is fixed", "err", e)
	case ctx.Err() != nil && s.ctx.Err() != nil:
	default:
		s.log.Warn("could not check the slack token (auth.test); will find out on the first message", "err", s.scrub(err))
	}
}

func (s *Sender) lock(kind, id string) *sync.Mutex {
	h := fnv.New32a()
	h.Write([]byte(kind + "/" + id))
	return &s.locks[h.Sum32()%uint32(len(s.locks))]
}

// Send delivers e once: it records build logs, folds floods, and posts a
// message (a thread reply and a card update in bot mode).
func (s *Sender) Send(ctx context.Context, e event.Event) sinks.Result {
	if err := ctx.Err(); err != nil {
		return sinks.RetryLater(fmt.Errorf("slack sink %s: %w", s.cfg.Name, err), 0)
	}
	s.maybeGC(ctx)
	d := parseData(e)
	if e.Kind() == event.KindBuild && e.Action() == "log" {
		if err := s.recordLog(ctx, e, d); err != nil {
			return sinks.RetryLater(fmt.Errorf("slack sink %s: recording build log: %w", s.cfg.Name, err), 0)
		}
	}
	if !s.user.Match(e.ShortType()) {
		// Only build.log gets here: the sink takes it for the log tail.
		return sinks.Delivered()
	}
	if s.window.hit(e.ShortType(), s.clock.Now(), s.cfg.Flood.Threshold, s.cfg.Flood.Window) {
		return s.fold(ctx, e, d)
	}
	if s.webhook || !threaded(e.Kind()) {
		return s.postSingle(ctx, e, d)
	}
	return s.postThreaded(ctx, e, d)
}

// recordLog keeps the last lines of an unfinished build. Lines that arrive
// after the build failed go onto the failed card instead (the log poller
// drains logs after the status), which the flusher refreshes.
func (s *Sender) recordLog(ctx context.Context, e event.Event, d data) error {
	lines := d.logLines()
	if len(lines) == 0 {
		return nil
	}
	mu := s.lock(e.Kind(), e.Subject)
	mu.Lock()
	defer mu.Unlock()
	now := s.clock.Now()
	stale := false
	err := s.store.Update(ctx, func(tx sinks.RecordTx) error {
		stale = false
		var rec parentRec
		if _, err := tx.GetSink(s.cfg.Name, parentKey(e.Kind(), e.Subject), &rec); err != nil {
			return err
		}
		if buildFinished(rec.Facts.Status) {
			if rec.Facts.Status != "failed" || rec.TS == "" || rec.replied(e.ID) {
				return nil
			}
			rec.Tail = appendTail(rec.Tail, lines)
			rec.markReplied(e.ID) // the batch is on the card now
			rec.Stale, rec.UpdatedAt, stale = true, now, true
			if err := tx.PutSink(s.cfg.Name, staleKey(e.Kind(), e.Subject), true); err != nil {
				return err
			}
			return tx.PutSink(s.cfg.Name, parentKey(e.Kind(), e.Subject), rec)
		}
		var ring logRing
		if _, err := tx.GetSink(s.cfg.Name, ringKey(e.Subject), &ring); err != nil {
			return err
		}
		if !ring.add(e.ID, lines, now) {
			return nil
		}
		return tx.PutSink(s.cfg.Name, ringKey(e.Subject), ring)
	})
	if err == nil && stale {
		s.kick()
	}
	return err
}

// load reads a resource's parent record and log ring.
func (s *Sender) load(kind, id string) (rec parentRec, ring logRing, err error) {
	err = s.store.View(func(tx sinks.RecordTx) error {
		if _, err := tx.GetSink(s.cfg.Name, parentKey(kind, id), &rec); err != nil {
			return err
		}
		if kind == event.KindBuild {
			_, err := tx.GetSink(s.cfg.Name, ringKey(id), &ring)
			return err
		}
		return nil
	})
	return rec, ring, err
}

// save writes a parent record (and its stale mark), dropping the build's
// log ring once the build is finished. It runs after Slack accepted a
// post, so its failure is logged, not retried (a retry would post again).
func (s *Sender) save(rec parentRec) {
	rec.UpdatedAt = s.clock.Now()
	kind, id := rec.Facts.Kind, rec.Facts.ID
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := s.store.Update(ctx, func(tx sinks.RecordTx) error {
		if err := tx.PutSink(s.cfg.Name, parentKey(kind, id), rec); err != nil {
			return err
		}
		if rec.Stale {
			if err := tx.PutSink(s.cfg.Name, staleKey(kind, id), true); err != nil {
				return err
			}
		} else if err := tx.DeleteSink(s.cfg.Name, staleKey(kind, id)); err != nil {
			return err
		}
		if kind == event.KindBuild && buildFinished(rec.Facts.Status) {
			return tx.DeleteSink(s.cfg.Name, ringKey(id))
		}
		return nil
	})
	if err != nil {
		s.log.Warn("slack: saving the parent message record failed; the next event may start a new thread", "resource", kind+"/"+id, "err", err)
	}
}

// prepare applies e to the resource's facts and picks the log tail a
// failed build shows.
func prepare(rec *parentRec, ring logRing, e event.Event, d data) {
	rec.Facts.apply(e, d)
	if e.Kind() == event.KindBuild && e.Action() == "failed" && len(ring.Lines) > 0 {
		rec.Tail = slices.Clone(ring.Lines)
	}
}

// postSingle posts one message for e: webhook mode, and events that are
// not about a build or VM.
func (s *Sender) postSingle(ctx context.Context, e event.Event, d data) sinks.Result {
	var rec parentRec
	if threaded(e.Kind()) {
		mu := s.lock(e.Kind(), e.Subject)
		mu.Lock()
		defer mu.Unlock()
		var ring logRing
		var err error
		if rec, ring, err = s.load(e.Kind(), e.Subject); err != nil {
			return sinks.RetryLater(fmt.Errorf("slack sink %s: reading state: %w", s.cfg.Name, err), 0)
		}
		prepare(&rec, ring, e, d)
	}
	if res, ok := s.postMsg(ctx, s.eventMessage(e, d, rec)); !ok {
		return res
	}
	if threaded(e.Kind()) {
		s.save(rec)
	}
	return sinks.Delivered()
}

// postThreaded is bot mode for builds and VMs: the first event posts the
// parent card; every event is a thread reply (a plain status change that
// created the parent needs none) and then updates the card in place.
func (s *Sender) postThreaded(ctx context.Context, e event.Event, d data) sinks.Result {
	mu := s.lock(e.Kind(), e.Subject)
	mu.Lock()
	defer mu.Unlock()
	rec, ring, err := s.load(e.Kind(), e.Subject)
	if err != nil {
		return sinks.RetryLater(fmt.Errorf("slack sink %s: reading state: %w", s.cfg.Name, err), 0)
	}
	prepare(&rec, ring, e, d)
	created := false
	if rec.TS == "" {
		ref, res, ok := s.postRef(ctx, s.cfg.Channel, "", s.cardMessage(rec))
		if !ok {
			return res
		}
		rec.Channel, rec.TS, created = ref.channel, ref.ts, true
		if statusEvent(e) && s.tmpl.Lookup(e.ShortType()) == nil {
			rec.markReplied(e.ID)
		}
		s.save(rec)
	}
	if !rec.replied(e.ID) {
		if _, res, ok := s.postRef(ctx, rec.Channel, rec.TS, s.eventMessage(e, d, rec)); !ok {
			return res
		}
		rec.markReplied(e.ID)
		rec.Stale = !created
		s.save(rec)
	}
	if !created {
		if res, ok := s.updateCard(ctx, &rec); !ok {
			return res
		}
		rec.Stale = false
		s.save(rec)
	}
	return sinks.Delivered()
}

// updateCard rewrites the parent message from rec. If somebody deleted
// it, a new parent is posted.
func (s *Sender) updateCard(ctx context.Context, rec *parentRec) (sinks.Result, bool) {
	msg := s.cardMessage(*rec)
	if err := s.limiter.wait(ctx, rec.Channel); err != nil {
		return s.classify(ctx, "chat.update", err), false
	}
	cctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	_, _, _, err := s.api.UpdateMessageContext(cctx, rec.Channel, rec.TS,
		goslack.MsgOptionText(msg.Text, false), goslack.MsgOptionBlocks(msg.Blocks...))
	if err == nil {
		s.setAuthErr(nil)
		return sinks.Delivered(), true
	}
	if code := slackCode(err); code == "message_not_found" || code == "channel_not_found" && rec.Channel != s.cfg.Channel {
		s.log.Info("slack: the parent message is gone; posting a new one", "resource", rec.Facts.Kind+"/"+rec.Facts.ID)
		ref, res, ok := s.postRef(ctx, s.cfg.Channel, "", msg)
		if !ok {
			return res, false
		}
		rec.Channel, rec.TS = ref.channel, ref.ts
		return sinks.Delivered(), true
	}
	return s.classify(ctx, "chat.update", err), false
}

type msgRef struct{ channel, ts string }

// postMsg posts a top-level message in either mode.
func (s *Sender) postMsg(ctx context.Context, msg message) (sinks.Result, bool) {
	if s.webhook {
		return s.postWebhook(ctx, msg)
	}
	_, res, ok := s.postRef(ctx, s.cfg.Channel, "", msg)
	return res, ok
}

// postRef posts with the bot token (chat.postMessage), as a thread reply
// when threadTS is set.
func (s *Sender) postRef(ctx context.Context, channel, threadTS string, msg message) (msgRef, sinks.Result, bool) {
	if err := s.limiter.wait(ctx, channel); err != nil {
		return msgRef{}, s.classify(ctx, "chat.postMessage", err), false
	}
	cctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	opts := []goslack.MsgOption{goslack.MsgOptionText(msg.Text, false), goslack.MsgOptionBlocks(msg.Blocks...)}
	if threadTS != "" {
		opts = append(opts, goslack.MsgOptionTS(threadTS))
	}
	ch, ts, err := s.api.PostMessageContext(cctx, channel, opts...)
	if err != nil {
		return msgRef{}, s.classify(ctx, "chat.postMessage", err), false
	}
	s.setAuthErr(nil)
	s.limiter.learn(ch, channel)
	if ch == "" {
		ch = channel
	}
	return msgRef{ch, ts}, sinks.Delivered(), true
}

func (s *Sender) postWebhook(ctx context.Context, msg message) (sinks.Result, bool) {
	if err := s.limiter.wait(ctx, "webhook"); err != nil {
		return s.classify(ctx, "incoming webhook", err), false
	}
	cctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	err := goslack.PostWebhookCustomHTTPContext(cctx, s.cfg.WebhookURL, s.http, &goslack.WebhookMessage{
		Text:   msg.Text,
		Blocks: &goslack.Blocks{BlockSet: msg.Blocks},
	})
	if err != nil {
		return s.classify(ctx, "incoming webhook", err), false
	}
	s.setAuthErr(nil)
	return sinks.Delivered(), true
}

// eventMessage is e's own message: the webhook message, or the thread
// reply.
func (s *Sender) eventMessage(e event.Event, d data, rec parentRec) message {
	var tail []string
	title := ""
	lines := d.logLines()
	switch {
	case e.Action() == "log" && e.Kind() != event.KindWebhook:
		tail = lines
		if len(tail) > TailLines {
			title = fmt.Sprintf("Last %d of %d lines", TailLines, len(lines))
			tail = tail[len(tail)-TailLines:]
		} else {
			title = plural(len(tail), "line", "lines")
		}
	case e.Kind() == event.KindBuild && e.Action() == "failed":
		tail = rec.Tail
		title = "Last " + plural(len(tail), "log line", "log lines")
	}
	v := view{headline: eventHeadline(e, rec.Facts, d, len(lines)), tail: tail, tailTitle: title, context: eventContext(e, d)}
	switch {
	case e.Kind() == event.KindWebhook:
		v.body = string(e.Data)
	case e.Action() != "log" && threaded(e.Kind()):
		v.fields = rec.Facts.fields()
	}
	if t := s.tmpl.Lookup(e.ShortType()); t != nil {
		td := TemplateData{
			Type: e.ShortType(), Kind: e.Kind(), ID: e.Subject, Action: e.Action(), EventID: e.ID, Time: e.Time,
			Status: rec.Facts.Status, PreviousStatus: rec.Facts.Previous, ImageID: rec.Facts.ImageID, Hostname: rec.Facts.Hostname,
			Duration: human(rec.Facts.duration()), IdleSince: rec.Facts.IdleSince, StopAt: rec.Facts.StopAt,
			IdleFor: human(rec.Facts.IdleFor), DryRun: rec.Facts.DryRun, LogTail: tail,
			Headline: v.headline.md.String(), Data: d,
		}
		out, err := headline.Exec(t, td)
		switch {
		case err != nil:
			s.log.Warn("slack: template failed; using the standard message", "type", e.ShortType(), "err", err)
		case out != "":
			v.override = out
		}
	}
	return v.message()
}

// cardMessage is the parent message: the resource's current status.
func (s *Sender) cardMessage(rec parentRec) message {
	v := view{headline: rec.Facts.cardHeadline(), fields: rec.Facts.fields()}
	if rec.Facts.Kind == event.KindBuild && rec.Facts.Status == "failed" && len(rec.Tail) > 0 {
		v.tail, v.tailTitle = rec.Tail, "Last "+plural(len(rec.Tail), "log line", "log lines")
	}
	ctx := &rich{}
	ctx.lit("Updated ").at(s.clock.Now()).lit(" · the thread has every event")
	v.context = ctx
	return v.message()
}

// maybeGC drops records nobody touched for recordTTL, at most hourly.
func (s *Sender) maybeGC(ctx context.Context) {
	now := s.clock.Now()
	s.mu.Lock()
	due := now.Sub(s.lastGC) >= time.Hour
	if due {
		s.lastGC = now
	}
	s.mu.Unlock()
	if !due {
		return
	}
	cutoff := now.Add(-recordTTL)
	err := s.store.Update(ctx, func(tx sinks.RecordTx) error {
		var old []string
		for _, fam := range []string{"parent", "logs"} {
			err := forEachSub(tx, s.cfg.Name, fam, func(k string, raw []byte) error {
				var r struct {
					UpdatedAt time.Time `json:"updatedAt"`
				}
				if jsonErr := jsonUnmarshal(raw, &r); jsonErr != nil || r.UpdatedAt.Before(cutoff) {
					old = append(old, fam+"/"+k)
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
		for _, k := range old {
			if err := tx.DeleteSink(s.cfg.Name, k); err != nil {
				return err
			}
			if rest, ok := strings.CutPrefix(k, "parent/"); ok {
				if err := tx.DeleteSink(s.cfg.Name, "stale/"+rest); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil && !errors.Is(err, context.Canceled) {
		s.log.Warn("slack: dropping old records failed", "err", err)
	}
}
