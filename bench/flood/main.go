// Command flood measures the relay's peak memory (RSS, from
// /proc/<pid>/status) under the floods of issue 20, with the relay as its
// own process:
//
//   - forged: S senders (256) posting 1 MiB bodies with well-formed
//     Standard Webhooks headers and a current timestamp but a wrong
//     signature, for D (10 s);
//
//   - stalled: U (1,000) uploads that declare 1 MiB, send half, and stall,
//     held for D;
//
//   - builds: N (600,000) distinct signed build webhooks, sent as fast as
//     64 senders go, with the poller on against the in-process Cakework
//     simulator (which knows none of the builds: each is a stray).
//
//     go run ./bench/flood [-only forged,stalled,builds] [-builds 600000] [-bin /path/to/relay] [-memlimit 230MiB] [-cgroup 256MiB]
//
// -bin runs another relay binary (say, one built from an older commit) for
// a before/after in the same minutes; by default it builds this module's.
// It prints the peak RSS during each flood, the RSS after it, and the
// answers the senders got.
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/cakework/cakeworksim"
	"github.com/cakework-relay/cakework-relay/internal/reliability"
)

func main() { os.Exit(run()) }

func run() int {
	only := flag.String("only", "forged,stalled,builds", "floods to run, comma-separated")
	bin := flag.String("bin", "", "relay binary (default: build this module's)")
	dur := flag.Duration("duration", 10*time.Second, "forged and stalled floods last this long")
	senders := flag.Int("senders", 256, "forged senders")
	uploads := flag.Int("uploads", 1000, "stalled uploads")
	builds := flag.Int("builds", 600000, "distinct build webhooks")
	bodyMiB := flag.Int("body", 1, "forged and stalled body size, MiB")
	heapProfile = flag.String("heapprofile", "", "after the builds flood, write the relay's heap profile (/v1/debug/pprof/heap) to this file")
	flag.StringVar(&cgroupLimit, "cgroup", "", "run the relay in a memory cgroup of this size (say 256MiB, needs root): a container of that size; relay serve sizes its Go memory limit from it, the kernel reclaims its page cache, and past the limit kills it")
	memlimit := flag.String("memlimit", "", "GOMEMLIMIT for the relay, e.g. 230MiB: what relay serve sets in a 256 MB container (none here: the machine has no cgroup limit)")
	flag.Parse()
	dir, err := os.MkdirTemp("", "relay-flood-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if *bin == "" {
		if *bin, err = reliability.Build(dir, reliability.RelayPkg, "relay"); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	fmt.Printf("flood benchmark: relay %s\n", *bin)
	for _, f := range strings.Split(*only, ",") {
		var err error
		switch f {
		case "forged":
			err = withRelay(*bin, dir, *memlimit, f, false, func(r *reliability.Relay, m *monitor) (string, error) {
				return forged(r, *senders, *bodyMiB<<20, *dur), nil
			})
		case "stalled":
			err = withRelay(*bin, dir, *memlimit, f, false, func(r *reliability.Relay, m *monitor) (string, error) {
				return stalled(r, *uploads, *bodyMiB<<20, *dur)
			})
		case "builds":
			err = withRelay(*bin, dir, *memlimit, f, true, func(r *reliability.Relay, m *monitor) (string, error) {
				return distinctBuilds(r, *builds, m), nil
			})
		default:
			err = fmt.Errorf("unknown flood %q", f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	return 0
}

// monitor samples the relay's RSS every 100 ms.
type monitor struct {
	p    *reliability.Proc
	peak atomic.Int64
	stop chan struct{}
	done chan struct{}
}

func watch(p *reliability.Proc) *monitor {
	m := &monitor{p: p, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(m.done)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			if rss, err := p.RSS(); err == nil && rss > m.peak.Load() {
				m.peak.Store(rss)
			}
			select {
			case <-m.stop:
				return
			case <-t.C:
			}
		}
	}()
	return m
}

func (m *monitor) end() int64 { close(m.stop); <-m.done; return m.peak.Load() }

// rssParts is the anonymous and file-backed shares of the RSS now (the
// file-backed ones are bbolt's mmap of relay.db: the kernel can drop them).
func rssParts(p *reliability.Proc) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.Cmd.Process.Pid))
	if err != nil {
		return "?"
	}
	var parts []string
	for _, l := range strings.Split(string(b), "\n") {
		for _, k := range []string{"RssAnon:", "RssFile:"} {
			if rest, ok := strings.CutPrefix(l, k); ok {
				kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
				parts = append(parts, strings.TrimSuffix(k, ":")+" "+mb(kb<<10))
			}
		}
	}
	return strings.Join(parts, ", ")
}

func mb(b int64) string { return fmt.Sprintf("%.0f MB", float64(b)/1e6) }

// cgroupLimit is -cgroup.
var cgroupLimit string

func withRelay(bin, dir, memlimit, name string, poller bool, flood func(*reliability.Relay, *monitor) (string, error)) error {
	addrs, err := reliability.FreeAddrs(2)
	if err != nil {
		return err
	}
	d, err := os.MkdirTemp(dir, name+"-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(d)
	cfg := reliability.RelayConfig{DataDir: d + "/data", HTTPAddr: addrs[0], EmbeddedAddr: addrs[1]}
	if poller {
		sim := cakeworksim.New(cakeworksim.Options{APIKey: reliability.APIKey, VMLogEvery: 1000 * time.Hour})
		api := httptest.NewServer(sim.Handler())
		defer api.Close()
		// The relay's default rate limit and schedules.
		cfg.CakeworkURL, cfg.RateLimit = api.URL, 10
		cfg.VMsEvery, cfg.BuildsEvery, cfg.LogsEvery = "@every 15s", "@every 5s", "@every 5s"
	}
	r, err := reliability.NewRelay(bin, d, cfg)
	if err != nil {
		return err
	}
	if memlimit != "" {
		r.Env = []string{"GOMEMLIMIT=" + memlimit}
	}
	if cgroupLimit != "" {
		cg, err := reliability.NewMemCgroup(fmt.Sprintf("relay-flood-%d-%s", os.Getpid(), name), cgroupLimit)
		if err != nil {
			return err
		}
		r.Cgroup = cg
		defer func() {
			fmt.Printf("%-8s %s\n", name, cg.Report())
			cg.Close()
		}()
	}
	if err := r.Start(); err != nil {
		return err
	}
	defer r.P.Term(5 * time.Second)
	time.Sleep(2 * time.Second)
	idle, _ := r.P.RSS()
	m := watch(r.P)
	start := time.Now()
	summary, err := flood(r, m)
	took := time.Since(start)
	peak := m.end()
	if err != nil {
		return err
	}
	time.Sleep(5 * time.Second)
	after, _ := r.P.RSS()
	fmt.Printf("%-8s idle %s, peak %s, 5 s after %s [%s] (%s) %s\n", name, mb(idle), mb(peak), mb(after), rssParts(r.P), took.Round(time.Second), summary)
	if r.P.Exited() {
		return fmt.Errorf("%s: the relay exited:\n%s", name, r.P.Logs)
	}
	return nil
}

// codes counts answers by status.
type codes struct {
	mu sync.Mutex
	n  map[int]int
}

func (c *codes) add(status int) {
	c.mu.Lock()
	if c.n == nil {
		c.n = map[int]int{}
	}
	c.n[status]++
	c.mu.Unlock()
}

func (c *codes) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var ks []int
	for k := range c.n {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	var parts []string
	for _, k := range ks {
		name := strconv.Itoa(k)
		if k == 0 {
			name = "error"
		}
		parts = append(parts, fmt.Sprintf("%s: %d", name, c.n[k]))
	}
	return "answers {" + strings.Join(parts, ", ") + "}"
}

// forgedHeaders are Standard Webhooks headers that pass every check but
// the signature.
func forgedHeaders(h http.Header) {
	id := make([]byte, 8)
	_, _ = rand.Read(id)
	sig := make([]byte, 32)
	_, _ = rand.Read(sig)
	h.Set("Content-Type", "application/json")
	h.Set("webhook-id", "msg_"+hex.EncodeToString(id))
	h.Set("webhook-timestamp", strconv.FormatInt(time.Now().Unix(), 10))
	h.Set("webhook-signature", "v1,"+base64.StdEncoding.EncodeToString(sig))
}

func forged(r *reliability.Relay, senders, size int, d time.Duration) string {
	body := []byte(`{"buildId":"b","imageId":"` + strings.Repeat("x", size-30) + `"}`)
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: senders, MaxIdleConns: senders}}
	var c codes
	end := time.Now().Add(d)
	var wg sync.WaitGroup
	for range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(end) {
				req, _ := http.NewRequest(http.MethodPost, r.URL("/webhooks/cakework"), strings.NewReader(string(body)))
				forgedHeaders(req.Header)
				res, err := hc.Do(req)
				if err != nil {
					c.add(0)
					continue
				}
				_, _ = io.Copy(io.Discard, res.Body)
				res.Body.Close()
				c.add(res.StatusCode)
			}
		}()
	}
	wg.Wait()
	if *heapProfile != "" {
		if err := saveHeap(r, *heapProfile); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
	}
	return c.String()
}

// stalled opens uploads that declare size bytes, send half, and stall for
// d; then it reads whatever each got as an answer.
func stalled(r *reliability.Relay, uploads, size int, d time.Duration) (string, error) {
	half := make([]byte, size/2)
	for i := range half {
		half[i] = 'x'
	}
	var c codes
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	for range uploads {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := net.DialTimeout("tcp", r.Cfg.HTTPAddr, 5*time.Second)
			if err != nil {
				c.add(0)
				return
			}
			mu.Lock()
			conns = append(conns, conn)
			mu.Unlock()
			h := http.Header{}
			forgedHeaders(h)
			var b strings.Builder
			fmt.Fprintf(&b, "POST /webhooks/cakework HTTP/1.1\r\nHost: relay\r\nContent-Length: %d\r\n", size)
			_ = h.Write(&b)
			b.WriteString("\r\n")
			if _, err := conn.Write([]byte(b.String())); err != nil {
				c.add(0)
				return
			}
			_ = conn.SetWriteDeadline(time.Now().Add(d))
			_, _ = conn.Write(half)
			// The answer, if the relay gives one before reading the body
			// (503 past the in-flight cap); a stalled read gets none.
			_ = conn.SetReadDeadline(time.Now().Add(d))
			res, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				c.add(0)
				return
			}
			res.Body.Close()
			c.add(res.StatusCode)
		}()
	}
	wg.Wait()
	for _, conn := range conns {
		conn.Close()
	}
	return c.String() + " (error: no answer while stalled)", nil
}

// distinctBuilds sends n signed build webhooks, each a new build, from 64
// senders.
// heapProfile is -heapprofile.
var heapProfile *string

// saveHeap writes the relay's heap profile to path.
func saveHeap(r *reliability.Relay, path string) error {
	req, err := http.NewRequest(http.MethodGet, r.URL("/v1/debug/pprof/heap"), nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+reliability.AdminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("heap profile: %s", resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(f, resp.Body)
	return err
}

func distinctBuilds(r *reliability.Relay, n int, m *monitor) string {
	s := reliability.NewSender(64)
	var c codes
	var next atomic.Int64
	var wg sync.WaitGroup
	url := r.URL("/webhooks/cakework")
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > int64(n) {
					return
				}
				id := fmt.Sprintf("bld_%012d", i)
				body := []byte(`{"buildId":"` + id + `","imageId":"img_` + id + `"}`)
				a, err := s.Post(context.Background(), url, fmt.Sprintf("msg_%012d", i), body)
				if err != nil {
					c.add(0)
					continue
				}
				c.add(a.Status)
				if a.Status == http.StatusServiceUnavailable {
					time.Sleep(100 * time.Millisecond)
				}
			}
		}()
	}
	wg.Wait()
	if *heapProfile != "" {
		if err := saveHeap(r, *heapProfile); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
	}
	return c.String()
}
