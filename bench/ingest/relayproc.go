package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/app"
	"github.com/cakework-relay/cakework-relay/internal/state"
)

// A relay under test runs as its own process, as `relay serve` does and as
// the glue does: the bench runs its own binary with -serve-relay. So the
// relay's garbage collector sees only the relay's heap, not the load
// generator's, and its CPU is counted apart. -inprocess keeps the earlier
// way (the relay inside the bench process) for comparison.
//
// The parent talks to the child over its stdin, one word per line:
//   - mark: the child notes its counters (and starts the CPU profile or
//     the trace, when asked), then answers "ok";
//   - report: it prints what changed since the mark, one line each, then
//     "end";
//   - EOF: it stops the relay and exits.

// relayEnv is added to a child relay's environment (-relay-env).
var relayEnv []string

// relayArgs are what a child relay needs to start as the parent would have.
type relayArgs struct {
	busURL     string
	replicas   int
	fleet      bool
	member     string
	cpuprofile string
	memprofile string
	trace      string
}

func (a relayArgs) flags() []string {
	f := []string{"-serve-relay", "-member", a.member}
	if a.busURL != "" {
		f = append(f, "-bus-url", a.busURL, "-replicas", strconv.Itoa(a.replicas))
	}
	if a.fleet {
		f = append(f, "-fleet")
	}
	if a.cpuprofile != "" {
		f = append(f, "-cpuprofile", a.cpuprofile)
	}
	if a.memprofile != "" {
		f = append(f, "-memprofile", a.memprofile)
	}
	if a.trace != "" {
		f = append(f, "-trace", a.trace)
	}
	return f
}

// serveRelay is the child: it starts the relay, prints its address, and
// answers the parent's words until its stdin closes.
func serveRelay(a relayArgs) error {
	app.TuneRuntime() // as relay serve does
	r, dir, err := startRelay(a.busURL, a.replicas, a.fleet, a.member)
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		r.Stop(ctx)
		cancel()
	}()
	fmt.Printf("listening %s\n", r.HTTPAddr())
	var m relayMark
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		switch in.Text() {
		case "mark":
			m = markRelay(r)
			if a.cpuprofile != "" {
				if f, err := os.Create(a.cpuprofile); err == nil {
					defer f.Close()
					pprof.StartCPUProfile(f)
				}
			}
			if a.trace != "" {
				go writeTrace(a.trace, 0)
			}
			fmt.Println("ok")
		case "report":
			if a.cpuprofile != "" {
				pprof.StopCPUProfile()
			}
			for _, l := range m.report(r) {
				fmt.Println(l)
			}
			if a.memprofile != "" {
				if err := writeAllocs(a.memprofile); err != nil {
					fmt.Fprintln(os.Stderr, err)
				}
			}
			fmt.Println("end")
		}
	}
	return in.Err()
}

// relayMark is a relay's counters at the start of a measurement.
type relayMark struct {
	ms runtime.MemStats
	st state.Stats
}

func markRelay(r *app.App) relayMark {
	var m relayMark
	runtime.ReadMemStats(&m.ms)
	m.st = r.Core().Store.Stats()
	return m
}

// report is what the relay did since the mark: its collections, commits,
// journal batches and JetStream syncs, and how long its outbox took to
// drain after the load.
func (m relayMark) report(r *app.App) []string {
	st1 := r.Core().Store.Stats()
	var ms1 runtime.MemStats
	runtime.ReadMemStats(&ms1)
	depth := r.Core().Store.OutboxDepth()
	t0 := time.Now()
	for r.Core().Store.OutboxDepth() > 0 && time.Since(t0) < 30*time.Second {
		time.Sleep(10 * time.Millisecond)
	}
	st0, ms0 := m.st, m.ms
	out := []string{fmt.Sprintf("relay: %d GC cycles during the load, heap in use %.0f MB after it, total pause %s",
		ms1.NumGC-ms0.NumGC, float64(ms1.HeapInuse)/(1<<20), time.Duration(ms1.PauseTotalNs-ms0.PauseTotalNs).Round(time.Microsecond))}
	if c, u := st1.Commits-st0.Commits, st1.Updates-st0.Updates; c > 0 && u > 0 {
		// Updates are the poller's, the publisher's and the journal checkpoints.
		out = append(out, fmt.Sprintf("relay: %d commits, %.1f updates/commit, %.2f pages written/update, write+sync %s/commit",
			c, float64(u)/float64(c), float64(st1.PagesWritten-st0.PagesWritten)/float64(u),
			((st1.WriteTime-st0.WriteTime)/time.Duration(c)).Round(time.Microsecond)))
	}
	if b := st1.JournalBatches - st0.JournalBatches; b > 0 {
		out = append(out, fmt.Sprintf("relay: journal %d batches, %.1f webhooks/batch, write+sync %s/batch",
			b, float64(st1.JournalRecords-st0.JournalRecords)/float64(b),
			((st1.JournalWriteTime-st0.JournalWriteTime)/time.Duration(b)).Round(time.Microsecond)))
	}
	if n := st1.BusSyncs + st1.BusSyncErrors - st0.BusSyncs - st0.BusSyncErrors; n > 0 {
		out = append(out, fmt.Sprintf("relay: JetStream file syncs %d (%d failed), %s each",
			n, st1.BusSyncErrors-st0.BusSyncErrors, ((st1.BusSyncTime-st0.BusSyncTime)/time.Duration(n)).Round(time.Microsecond)))
	}
	return append(out, fmt.Sprintf("relay: outbox depth at end of load %d, drained to JetStream in %s", depth, time.Since(t0).Round(time.Millisecond)))
}

// relayProc is a child relay, seen from the parent.
type relayProc struct {
	addr string
	cmd  *exec.Cmd
	in   io.WriteCloser
	// lines is the child's stdout, one line each, read by one goroutine
	// (closed when the child exits).
	lines chan string
}

// startRelayProc runs a child relay and waits for its address.
func startRelayProc(a relayArgs) (*relayProc, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, a.flags()...)
	cmd.Stderr = os.Stderr
	cmd.Env = append(os.Environ(), relayEnv...)
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &relayProc{cmd: cmd, in: in, lines: make(chan string, 64)}
	go func() {
		defer close(p.lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
	}()
	addr, err := p.readUntil(func(l string) bool { return strings.HasPrefix(l, "listening ") })
	if err != nil {
		p.stop()
		return nil, fmt.Errorf("relay process: %w", err)
	}
	p.addr = strings.TrimPrefix(addr[len(addr)-1], "listening ")
	return p, nil
}

// readUntil reads the child's lines up to and including the one done
// accepts (60 s at most).
func (p *relayProc) readUntil(done func(string) bool) ([]string, error) {
	var lines []string
	timeout := time.After(60 * time.Second)
	for {
		select {
		case l, ok := <-p.lines:
			if !ok {
				return nil, errors.New("the process exited")
			}
			lines = append(lines, l)
			if done(l) {
				return lines, nil
			}
		case <-timeout:
			return nil, errors.New("no answer after 60 s")
		}
	}
}

// mark asks the child to note its counters.
func (p *relayProc) mark() error {
	if _, err := fmt.Fprintln(p.in, "mark"); err != nil {
		return err
	}
	_, err := p.readUntil(func(l string) bool { return l == "ok" })
	return err
}

// report asks the child what changed since the mark.
func (p *relayProc) report() ([]string, error) {
	if _, err := fmt.Fprintln(p.in, "report"); err != nil {
		return nil, err
	}
	l, err := p.readUntil(func(l string) bool { return l == "end" })
	if err != nil {
		return nil, err
	}
	return l[:len(l)-1], nil
}

// cpu is the CPU time the child used so far.
func (p *relayProc) cpu() time.Duration { return procCPU(p.cmd.Process.Pid) }

// stop closes the child's stdin (it stops the relay) and waits for it.
func (p *relayProc) stop() {
	p.in.Close()
	done := make(chan struct{})
	go func() { p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		p.cmd.Process.Kill()
		<-done
	}
}

// relayProcesses measures members child relays (the senders go
// round-robin to them) and prints the first one's report.
func relayProcesses(a relayArgs, members, senders int, warmup, duration time.Duration) (result, error) {
	var procs []*relayProc
	defer func() {
		for _, p := range procs {
			p.stop()
		}
	}()
	var urls []string
	for i := 1; i <= members; i++ {
		b := a
		b.member = fmt.Sprintf("m%d", i)
		if i > 1 {
			b.cpuprofile, b.memprofile, b.trace = "", "", ""
		}
		p, err := startRelayProc(b)
		if err != nil {
			return result{}, err
		}
		procs = append(procs, p)
		urls = append(urls, "http://"+p.addr+"/webhooks/cakework")
	}
	cpu0 := make([]time.Duration, len(procs))
	marked := make(chan error, 1)
	go func() {
		time.Sleep(warmup)
		for i, p := range procs {
			cpu0[i] = p.cpu()
		}
		marked <- procs[0].mark()
	}()
	r := load("relay", strings.Join(urls, ","), senders, warmup, duration, "")
	var cpu time.Duration
	for i, p := range procs {
		cpu += p.cpu() - cpu0[i]
	}
	if err := <-marked; err != nil {
		return r, err
	}
	lines, err := procs[0].report()
	if err != nil {
		return r, err
	}
	r.print()
	fmt.Printf("relay: its own process(es): CPU %.2f cores, %.0f µs/request (measured part)\n",
		cpu.Seconds()/duration.Seconds(), float64(cpu.Microseconds())/float64(max(r.n, 1)))
	for _, l := range lines {
		fmt.Println(l)
	}
	return r, nil
}
