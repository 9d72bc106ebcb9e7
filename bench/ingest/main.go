// Command ingest measures webhook ingest against a bare net/http handler and
// against the hand-written glue (verify, publish to JetStream, 202; its own
// process, see serveGlue), in one run, with one load generator: N keep-alive senders that sign every
// request with Standard Webhooks (the reference library), each request a new
// build and a new webhook-id, for a fixed duration per target.
//
//	go run ./bench/ingest [-duration 10s] [-senders 64]
//
// The relay under test is the real one (app.New with the default
// components): state in bbolt in a temp dir, an in-process embedded
// JetStream, and the outbox publisher draining to it while the load runs.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/cakework-relay/cakework-relay/internal/app"
	"github.com/cakework-relay/cakework-relay/internal/config"
	"github.com/cakework-relay/cakework-relay/internal/ingest"
	"github.com/cakework-relay/cakework-relay/internal/reliability"
)

const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

func main() { os.Exit(run()) }

func run() int {
	duration := flag.Duration("duration", 10*time.Second, "measured load per target")
	warmup := flag.Duration("warmup", time.Second, "unmeasured load before each measurement")
	senders := flag.Int("senders", 64, "concurrent keep-alive senders")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the relay run (or of the bare run with -only bare) to this file")
	traceFile := flag.String("trace", "", "write a 1 s execution trace of the relay run (after the warm-up) to this file")
	memprofile := flag.String("memprofile", "", "write an allocation profile (whole process, load generator included) after the relay run to this file")
	only := flag.String("only", "", "run only bare, glue or relay")
	serveGlueAddr := flag.String("serve-glue", "", "internal: serve the hand-written glue on this address (the bench runs itself with it)")
	glueDir := flag.String("glue-dir", "", "internal: the glue's JetStream store directory")
	ids := flag.String("ids", "random", "build and webhook ids: random (UUIDv4-like) or ordered (time-ordered, UUIDv7/KSUID-like)")
	natsNodes := flag.Int("nats", 0, "run the relays on an external NATS cluster of this many nats-server processes (0: the embedded server)")
	members := flag.Int("members", 1, "in-process relays on the same bus (with -nats); the senders go round-robin to them")
	flag.BoolVar(&glueSyncAlways, "glue-sync-always", false, "the glue's JetStream fsyncs every message before its ack (sync_always), so its 202 means on disk like the relay's")
	relayEnvFlag := flag.String("relay-env", "", "comma-separated VAR=value added to the relay process's environment (say GOMAXPROCS=2)")
	inProcess := flag.Bool("inprocess", false, "run the relay inside the bench process (sessions 1-6 measured it so; its collector then also sees the load generator's heap) instead of as its own process")
	member := flag.String("member", "m1", "internal, with -serve-relay: the member name")
	busURLFlag := flag.String("bus-url", "", "internal, with -serve-relay: the external NATS")
	replicasFlag := flag.Int("replicas", 1, "internal, with -serve-relay: the stream's replicas")
	serveRelayFlag := flag.Bool("serve-relay", false, "internal: serve a relay (the bench runs itself with it) and answer mark/report on stdin")
	fleet := flag.Bool("fleet", false, "with -nats: cluster.enabled (a 2xx after the replicated stream's ack and the fleet's seen bucket); without: the local journal and outbox (bus.replicas is min(nats, 3) either way)")
	flag.Parse()
	if *serveGlueAddr != "" {
		if err := serveGlue(*serveGlueAddr, *glueDir, glueSyncAlways); err != nil {
			fmt.Fprintln(os.Stderr, "glue:", err)
			return 1
		}
		return 0
	}
	if *relayEnvFlag != "" {
		relayEnv = strings.Split(*relayEnvFlag, ",")
	}
	if *serveRelayFlag {
		if err := serveRelay(relayArgs{busURL: *busURLFlag, replicas: *replicasFlag, fleet: *fleet, member: *member,
			cpuprofile: *cpuprofile, memprofile: *memprofile, trace: *traceFile}); err != nil {
			fmt.Fprintln(os.Stderr, "relay:", err)
			return 1
		}
		return 0
	}
	if *only != "" && *only != "bare" && *only != "glue" && *only != "relay" {
		fmt.Fprintln(os.Stderr, "-only: use bare, glue or relay")
		return 2
	}
	if *members > 1 && *natsNodes == 0 {
		fmt.Fprintln(os.Stderr, "-members needs -nats: in-process relays share an external NATS")
		return 2
	}
	if *fleet && *natsNodes == 0 {
		fmt.Fprintln(os.Stderr, "-fleet needs -nats")
		return 2
	}
	if *ids != "random" && *ids != "ordered" {
		fmt.Fprintln(os.Stderr, "-ids: use random or ordered")
		return 2
	}
	orderedIDs = *ids == "ordered"
	// As relay serve does, for both runs: GOMAXPROCS and GOGC in the
	// environment override it.
	procs, gcPercent := app.TuneRuntime()

	fmt.Printf("ingest benchmark: %d senders, %s each (after %s warm-up), %s ids, GOMAXPROCS=%d, GOGC=%d, %s\n",
		*senders, *duration, *warmup, *ids, procs, gcPercent, runtime.Version())

	var bare, glue, relay result
	if *only == "" || *only == "bare" {
		addr, stop, err := startBare()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		bareProfile := ""
		if *only == "bare" {
			bareProfile = *cpuprofile
		}
		bare = load("bare", "http://"+addr+"/webhooks/cakework", *senders, *warmup, *duration, bareProfile)
		stop()
		bare.print()
	}
	if *only == "" || *only == "glue" {
		addr, pid, stop, err := startGlue()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		cpu0, t0 := procCPU(pid), time.Now()
		glue = load("glue", "http://"+addr+"/webhooks/cakework", *senders, *warmup, *duration, "")
		if cpu := procCPU(pid) - cpu0; cpu > 0 {
			fmt.Printf("glue : its own process: CPU %.2f cores, %.0f µs/request\n",
				cpu.Seconds()/time.Since(t0).Seconds(), float64(cpu.Microseconds())/float64(max(glue.all, 1)))
		}
		stop()
		glue.print()
	}
	if *only == "" || *only == "relay" {
		busURL, replicas := "", 1
		if *natsNodes > 0 {
			nc, stopNATS, err := startNATS(*natsNodes)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			defer stopNATS()
			busURL = nc.URL()
			// The same replicas either way: the runs differ in what a
			// 2xx waits for, not in where the stream ends up.
			replicas = min(*natsNodes, 3)
			fmt.Printf("bus: %d nats-server nodes, %d relay(s), fleet %v, replicas %d\n", *natsNodes, *members, *fleet, replicas)
		}
		var err error
		if *inProcess {
			relay, err = relayInProcess(busURL, replicas, *fleet, *members, *senders, *warmup, *duration, *cpuprofile, *memprofile, *traceFile)
		} else {
			relay, err = relayProcesses(relayArgs{busURL: busURL, replicas: replicas, fleet: *fleet, cpuprofile: *cpuprofile, memprofile: *memprofile, trace: *traceFile},
				*members, *senders, *warmup, *duration)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	if bare.n > 0 && relay.n > 0 {
		fmt.Printf("ratio relay/bare throughput: %.2f (target >= 0.50); relay p99 %s (target < 20ms)\n",
			relay.rps()/bare.rps(), relay.p(0.99))
	}
	if glue.n > 0 && relay.n > 0 {
		fmt.Printf("ratio relay/glue throughput: %.2f (target >= 1.0); p99 relay %s, glue %s\n",
			relay.rps()/glue.rps(), relay.p(0.99), glue.p(0.99))
	}
	if glue.n > 0 && bare.n > 0 {
		fmt.Printf("ratio glue/bare throughput: %.2f\n", glue.rps()/bare.rps())
	}
	return 0
}

// writeAllocs writes the allocation profile since the process started.
func writeAllocs(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return pprof.Lookup("allocs").WriteTo(f, 0)
}

// writeTrace records an execution trace of one second after the warm-up.
func writeTrace(path string, warmup time.Duration) {
	time.Sleep(warmup)
	f, err := os.Create(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	defer f.Close()
	if err := trace.Start(f); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	time.Sleep(time.Second)
	trace.Stop()
}

func startBare() (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusAccepted)
	})}
	go srv.Serve(ln)
	return ln.Addr().String(), func() { srv.Close() }, nil
}

// startNATS runs a cluster of n nats-server processes built from the
// module (the reliability harness's).
func startNATS(n int) (*reliability.NATSCluster, func(), error) {
	dir, err := os.MkdirTemp("", "relay-bench-nats-*")
	if err != nil {
		return nil, nil, err
	}
	bin, err := reliability.Build(dir, reliability.NATSPkg, "nats-server")
	if err != nil {
		return nil, nil, err
	}
	nc, err := reliability.NewNATSCluster(bin, dir, n)
	if err != nil {
		return nil, nil, err
	}
	if n == 1 {
		nc.Nodes[0].Extra = nil // a lone server, no routes
	}
	if err := nc.Start(); err != nil {
		return nil, nil, err
	}
	stop := func() { nc.Kill(); os.RemoveAll(dir) }
	if err := nc.WaitJetStream(context.Background(), n, 30*time.Second); err != nil {
		stop()
		return nil, nil, err
	}
	return nc, stop, nil
}

func startRelay(busURL string, replicas int, fleet bool, member string) (*app.App, string, error) {
	dir, err := os.MkdirTemp("", "relay-bench-*")
	if err != nil {
		return nil, "", err
	}
	cfg := config.Default(nil)
	cfg.DataDir = dir
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.Bus.Embedded.Listen = ""
	if busURL != "" {
		cfg.Bus.URL = busURL
		cfg.Bus.Replicas = replicas
		cfg.Cluster.Enabled = fleet
		cfg.Cluster.Member = member
	}
	cfg.Ingest.Cakework = ingest.CakeworkConfig{Configured: true, Secret: secret}
	if err := cfg.Validate(); err != nil {
		return nil, "", err
	}
	a, err := app.New(app.Options{Config: cfg, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return nil, "", err
	}
	if err := a.Start(context.Background()); err != nil {
		return nil, "", err
	}
	return a, dir, nil
}

var orderedIDs bool

// glueSyncAlways is -glue-sync-always.
var glueSyncAlways bool

type result struct {
	name    string
	n       int
	errs    int64
	elapsed time.Duration
	lat     []time.Duration
	// all counts every request, warm-up included (CPU per request
	// divides by it).
	all int64
}

func (r result) rps() float64 { return float64(r.n) / r.elapsed.Seconds() }

func (r result) p(q float64) time.Duration {
	if len(r.lat) == 0 {
		return 0
	}
	return r.lat[min(len(r.lat)-1, int(q*float64(len(r.lat))))].Round(10 * time.Microsecond)
}

func (r result) print() {
	fmt.Printf("%-5s: %8.0f req/s  p50 %-8s p99 %-8s  (%d requests, %d errors)\n",
		r.name, r.rps(), r.p(0.5), r.p(0.99), r.n, r.errs)
}

// load runs senders until warmup+duration has passed and measures the
// requests that start after warmup.
func load(name, url string, senders int, warmup, duration time.Duration, cpuprofile string) result {
	tr := &http.Transport{MaxIdleConns: senders * 2, MaxIdleConnsPerHost: senders * 2, MaxConnsPerHost: senders, DisableCompression: true}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		panic(err)
	}
	start := time.Now()
	measureFrom := start.Add(warmup)
	end := measureFrom.Add(duration)
	var errs, total atomic.Int64
	lats := make([][]time.Duration, senders)
	var wg sync.WaitGroup
	urls := strings.Split(url, ",")
	var ru0 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	defer func() {
		var ru1 syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
		cpu := time.Duration(ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano())
		what := "load generator included"
		if name == "glue" {
			what = "the load generator only: the glue is its own process"
		}
		fmt.Printf("%-5s: process CPU %.2f cores, %.0f µs/request (%s)\n", name,
			cpu.Seconds()/time.Since(start).Seconds(), float64(cpu.Microseconds())/float64(max(total.Load(), 1)), what)
	}()
	var prof *os.File
	if cpuprofile != "" {
		go func() {
			time.Sleep(warmup)
			f, err := os.Create(cpuprofile)
			if err == nil {
				prof = f
				pprof.StartCPUProfile(f)
			}
		}()
	}
	for s := 0; s < senders; s++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lat := make([]time.Duration, 0, 1<<16)
			rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(s)))
			body := make([]byte, 0, 128)
			for i := 0; ; i++ {
				t0 := time.Now()
				if t0.After(end) {
					break
				}
				// Random ids are like Cakework's UUIDv4 buildIds: no B-tree
				// locality. Ordered ids are like UUIDv7 or Svix's KSUID
				// msg ids: new keys land next to each other.
				var build, msg uint64
				if orderedIDs {
					build, msg = uint64(t0.UnixNano()), uint64(t0.UnixNano())
				} else {
					build, msg = rng.Uint64(), rng.Uint64()
				}
				body = fmt.Appendf(body[:0], `{"buildId":"%016x%08x","imageId":"img-%d"}`, build, rng.Uint32(), i)
				msgID := fmt.Sprintf("msg_%016x%08x", msg, rng.Uint32())
				sig, _ := wh.Sign(msgID, t0, body)
				req, _ := http.NewRequest(http.MethodPost, urls[s%len(urls)], bytes.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("webhook-id", msgID)
				req.Header.Set("webhook-timestamp", strconv.FormatInt(t0.Unix(), 10))
				req.Header.Set("webhook-signature", sig)
				resp, err := hc.Do(req)
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusAccepted {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				d := time.Since(t0)
				total.Add(1)
				if err != nil {
					if errs.Add(1) == 1 {
						fmt.Fprintf(os.Stderr, "%s: first error: %v\n", name, err)
					}
					continue
				}
				if t0.After(measureFrom) {
					lat = append(lat, d)
				}
			}
			lats[s] = lat
		}()
	}
	wg.Wait()
	if prof != nil {
		pprof.StopCPUProfile()
		prof.Close()
	}
	r := result{name: name, errs: errs.Load(), elapsed: duration, all: total.Load()}
	for _, l := range lats {
		r.lat = append(r.lat, l...)
	}
	slices.Sort(r.lat)
	r.n = len(r.lat)
	return r
}

// relayInProcess measures members relays inside this process (-inprocess)
// and prints the first one's report.
func relayInProcess(busURL string, replicas int, fleet bool, members, senders int, warmup, duration time.Duration, cpuprofile, memprofile, traceFile string) (result, error) {
	var urls []string
	var all []*app.App
	defer func() {
		for _, b := range all {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			b.Stop(ctx)
			cancel()
		}
	}()
	var dirs []string
	defer func() {
		for _, d := range dirs {
			os.RemoveAll(d)
		}
	}()
	for i := 1; i <= members; i++ {
		b, dir, err := startRelay(busURL, replicas, fleet, fmt.Sprintf("m%d", i))
		if err != nil {
			return result{}, err
		}
		all, dirs = append(all, b), append(dirs, dir)
		urls = append(urls, "http://"+b.HTTPAddr()+"/webhooks/cakework")
	}
	m := markRelay(all[0])
	if traceFile != "" {
		go writeTrace(traceFile, warmup)
	}
	r := load("relay", strings.Join(urls, ","), senders, warmup, duration, cpuprofile)
	lines := m.report(all[0])
	r.print()
	if memprofile != "" {
		if err := writeAllocs(memprofile); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
	}
	for _, l := range lines {
		fmt.Println(l)
	}
	return r, nil
}
