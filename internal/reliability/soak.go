package reliability

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/cakework"
	"github.com/cakework-relay/cakework-relay/internal/cakework/cakeworksim"
)

// SoakOptions shape a soak run.
type SoakOptions struct {
	RelayBin string
	Dir      string
	Duration time.Duration
	// Rate is generic webhooks per second, spread over Senders connections.
	Rate    int
	Senders int
	// VMs in the simulator, all started; each logs a line every VMLogEvery
	// (that bounds the simulator's memory, which keeps every line).
	VMs        int
	VMLogEvery time.Duration
	// Churn is VM state changes per second (started <-> stopped).
	Churn float64
	// SeenTTL and MaxAge bound bbolt's seen-id index and the JetStream
	// store.
	SeenTTL, MaxAge time.Duration
	// Sample is the reporting interval.
	Sample time.Duration
	// LogsEvery and VMsEvery are the poller schedules.
	LogsEvery, VMsEvery string
	// Callback adds an HTTP callback sink for vm.* events.
	Callback bool
	// Out gets one line per sample; RelayLog the relay's output.
	Out      io.Writer
	RelayLog *os.File
	// Cgroup, when set, is the memory cgroup the relay runs in.
	Cgroup *MemCgroup
	// RelayEnv is added to the relay's environment (say GOMEMLIMIT=230MiB).
	RelayEnv []string
}

// SoakSample is one interval's figures.
type SoakSample struct {
	At                 time.Duration
	RSS                int64
	HeapInuse          float64
	Goroutines         float64
	DBBytes, JSBytes   int64
	JournalBytes       int64 // data_dir/journal: preallocated segments and the spare
	Sent, Acked, Non2x int
	Errors             int
	P50, P99, Max      time.Duration
	OutboxDepth        float64
	Published          float64
	PollerLogLines     float64
	CallbacksOK        int
	SimRSS             int64 // the harness process (simulator, senders)
}

// SoakResult is the whole run.
type SoakResult struct {
	Samples   []SoakSample
	Sent      int64
	Acked     int64
	Non2xx    int64
	Errors    int64
	RelayLogs string
}

// Problems are what the samples show wrong whatever the load: an outbox
// depth below zero (a miscount).
func (r *SoakResult) Problems() []string {
	var ps []string
	for _, s := range r.Samples {
		if s.OutboxDepth < 0 {
			ps = append(ps, fmt.Sprintf("%s: outbox depth %.0f, below zero", s.At.Round(time.Second), s.OutboxDepth))
		}
	}
	return ps
}

// Header is the column header of Format.
func (SoakSample) Header() string {
	return "t\trss_MB\theap_MB\tgoroutines\tbbolt_MB\tjournal_MB\tjetstream_MB\tsent\tacked\tnon2xx\terrs\tp50\tp99\tmax\toutbox\tpublished\tlog_lines\tcallbacks\tharness_rss_MB"
}

// Format renders a sample as one tab-separated line.
func (s SoakSample) Format() string {
	mb := func(b float64) string { return fmt.Sprintf("%.1f", b/(1<<20)) }
	return fmt.Sprintf("%s\t%s\t%s\t%.0f\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%s\t%s\t%s\t%.0f\t%.0f\t%.0f\t%d\t%s",
		s.At.Round(time.Second), mb(float64(s.RSS)), mb(s.HeapInuse), s.Goroutines, mb(float64(s.DBBytes)), mb(float64(s.JournalBytes)), mb(float64(s.JSBytes)),
		s.Sent, s.Acked, s.Non2x, s.Errors, s.P50.Round(time.Microsecond), s.P99.Round(time.Microsecond), s.Max.Round(time.Microsecond),
		s.OutboxDepth, s.Published, s.PollerLogLines, s.CallbacksOK, mb(float64(s.SimRSS)))
}

// Soak runs the relay binary under steady webhook load and a large
// simulator, sampling its resource use.
func Soak(ctx context.Context, o SoakOptions) (*SoakResult, error) {
	if o.Senders == 0 {
		o.Senders = 32
	}
	if o.Sample == 0 {
		o.Sample = time.Minute
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	sim := cakeworksim.New(cakeworksim.Options{APIKey: APIKey, VMLogEvery: o.VMLogEvery, Seed: 7})
	for i := 0; i < o.VMs; i++ {
		port := 8080
		sim.AddVM(cakework.VM{ID: fmt.Sprintf("vm-%05d", i), Port: &port})
	}
	api := httptest.NewServer(sim.Handler())
	defer api.Close()
	recv := NewReceiver(0)
	cb := httptest.NewServer(recv)
	defer cb.Close()

	addrs, err := FreeAddrs(2)
	if err != nil {
		return nil, err
	}
	httpAddr, natsAddr := addrs[0], addrs[1]
	cfg := RelayConfig{
		DataDir: filepath.Join(o.Dir, "data"), HTTPAddr: httpAddr, EmbeddedAddr: natsAddr,
		CakeworkURL: api.URL, RateLimit: 2000, SeenTTL: o.SeenTTL, MaxAge: o.MaxAge,
		VMsEvery: o.VMsEvery, LogsEvery: o.LogsEvery, BuildsEvery: "@every 5s", LogLevel: "warn",
	}
	if cfg.VMsEvery == "" {
		cfg.VMsEvery = "@every 15s"
	}
	if cfg.LogsEvery == "" {
		cfg.LogsEvery = "@every 10s"
	}
	if o.Callback {
		cfg.CallbackURL, cfg.CallbackEvents, cfg.CallbackConc = cb.URL, []string{"vm.*"}, 4
	}
	relay, err := NewRelay(o.RelayBin, o.Dir, cfg)
	if err != nil {
		return nil, err
	}
	relay.LogFile = o.RelayLog
	relay.Cgroup = o.Cgroup
	relay.Env = append(relay.Env, o.RelayEnv...)
	if err := relay.Start(); err != nil {
		return nil, err
	}
	res := &SoakResult{}
	defer func() {
		_ = relay.P.Term(10 * time.Second)
		res.RelayLogs = relay.P.Logs.String()
	}()

	ctx, cancel := context.WithTimeout(ctx, o.Duration)
	defer cancel()
	var wg sync.WaitGroup

	// VM churn: started <-> stopped.
	if o.Churn > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(3, 4))
			every := time.Duration(float64(time.Second) / o.Churn)
			for CtxSleep(ctx, every) == nil {
				id := fmt.Sprintf("vm-%05d", rng.IntN(o.VMs))
				v, ok := sim.VM(id)
				if !ok {
					continue
				}
				if v.State == cakework.VMStarted {
					sim.SetVMState(id, cakework.VMStopped)
				} else {
					sim.SetVMState(id, cakework.VMStarted)
				}
			}
		}()
	}

	// Webhooks at a steady rate: a pacer hands out numbered jobs every 10ms.
	lat := &Latencies{}
	var sent, acked, non2xx, errs atomic.Int64
	jobs := make(chan int64, o.Rate)
	snd := NewSender(o.Senders)
	url := relay.URL("/webhooks/" + GenericReceiver)
	for range o.Senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range jobs {
				body := fmt.Appendf(nil, `{"deploy":%d,"service":"api","env":"prod","sha":"%016x"}`, n, n*2654435761)
				start := time.Now()
				a, err := snd.Post(context.Background(), url, fmt.Sprintf("msg_soak_%d", n), body)
				lat.Add(time.Since(start))
				switch {
				case err != nil:
					errs.Add(1)
				case a.Status == http.StatusAccepted || a.Status == http.StatusOK:
					acked.Add(1)
				default:
					non2xx.Add(1)
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(jobs)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		start := time.Now()
		var n int64
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			due := int64(time.Since(start).Seconds() * float64(o.Rate))
			for ; n < due; n++ {
				select {
				case jobs <- n:
					sent.Add(1)
				case <-ctx.Done():
					return
				}
			}
		}
	}()

	// Sampling.
	start := time.Now()
	tick := time.NewTicker(o.Sample)
	defer tick.Stop()
	fmt.Fprintln(o.Out, SoakSample{}.Header())
	var prevSent, prevAcked, prevNon, prevErr int64
	sample := func() {
		s := SoakSample{At: time.Since(start)}
		s.RSS, _ = relay.P.RSS()
		m, _ := relay.Metrics(context.Background(), "go_goroutines", "go_memstats_heap_inuse_bytes", "relay_outbox_depth", "relay_outbox_published_total", "relay_poller_log_lines_total")
		s.Goroutines, s.HeapInuse, s.OutboxDepth, s.Published = m["go_goroutines"], m["go_memstats_heap_inuse_bytes"], m["relay_outbox_depth"], m["relay_outbox_published_total"]
		for k, v := range m {
			if len(k) > len("relay_poller_log_lines_total") && k[:len("relay_poller_log_lines_total")] == "relay_poller_log_lines_total" {
				s.PollerLogLines += v
			}
		}
		s.DBBytes = FileSize(filepath.Join(cfg.DataDir, "relay.db"))
		s.JSBytes = DirSize(filepath.Join(cfg.DataDir, "jetstream"))
		s.JournalBytes = DirSize(filepath.Join(cfg.DataDir, "journal"))
		cs, ca, cn, ce := sent.Load(), acked.Load(), non2xx.Load(), errs.Load()
		s.Sent, s.Acked, s.Non2x, s.Errors = int(cs-prevSent), int(ca-prevAcked), int(cn-prevNon), int(ce-prevErr)
		prevSent, prevAcked, prevNon, prevErr = cs, ca, cn, ce
		ps, _ := lat.Take(50, 99, 100)
		s.P50, s.P99, s.Max = ps[0], ps[1], ps[2]
		_, _, s.CallbacksOK, _ = recv.Stats()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		s.SimRSS = int64(ms.Sys)
		res.Samples = append(res.Samples, s)
		fmt.Fprintln(o.Out, s.Format())
	}
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-tick.C:
			if relay.P.Exited() {
				return res, fmt.Errorf("relay exited during the soak:\n%s", relay.P.Logs)
			}
			sample()
		}
	}
	wg.Wait()
	res.Sent, res.Acked, res.Non2xx, res.Errors = sent.Load(), acked.Load(), non2xx.Load(), errs.Load()
	return res, nil
}
