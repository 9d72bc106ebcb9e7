package reliability

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Module path of the relay; the binaries are built from it.
const (
	RelayPkg = "github.com/cakework-relay/cakework-relay/cmd/relay"
	NATSPkg  = "github.com/nats-io/nats-server/v2"
)

// Build runs go build for pkg into dir and returns the binary's path.
func Build(dir, pkg, name string) (string, error) {
	out := filepath.Join(dir, name)
	b, err := exec.Command("go", "build", "-o", out, pkg).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build %s: %w\n%s", pkg, err, b)
	}
	return out, nil
}

// FreeAddrs returns n distinct loopback addresses with ports nobody listens
// on right now (all held open until every one is chosen, so they differ).
func FreeAddrs(n int) ([]string, error) {
	var out []string
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer l.Close()
		out = append(out, l.Addr().String())
	}
	return out, nil
}

// Buffer is a goroutine-safe, size-capped log buffer: it keeps the first
// and the last Cap/2 bytes, so a long run's output cannot grow the test's
// memory.
type Buffer struct {
	mu   sync.Mutex
	head bytes.Buffer
	tail []byte
	Cap  int
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	c := b.Cap
	if c <= 0 {
		c = 1 << 20
	}
	if b.head.Len() < c/2 {
		n := min(len(p), c/2-b.head.Len())
		b.head.Write(p[:n])
		p2 := p[n:]
		b.tail = append(b.tail, p2...)
	} else {
		b.tail = append(b.tail, p...)
	}
	if len(b.tail) > c/2 {
		b.tail = append(b.tail[:0], b.tail[len(b.tail)-c/2:]...)
	}
	return len(p), nil
}

func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.head.String() + string(b.tail)
}

// Proc is a child process.
type Proc struct {
	Cmd  *exec.Cmd
	Logs *Buffer
	done chan struct{}
	err  error
}

// Start runs bin with args; its stdout and stderr go to the returned
// process's Logs (and to tee when not nil).
func Start(bin string, args, env []string, tee *os.File) (*Proc, error) {
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	logs := &Buffer{Cap: 4 << 20}
	if tee != nil {
		w := &teeWriter{a: logs, b: tee}
		cmd.Stdout, cmd.Stderr = w, w
	} else {
		cmd.Stdout, cmd.Stderr = logs, logs
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &Proc{Cmd: cmd, Logs: logs, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

type teeWriter struct {
	a *Buffer
	b *os.File
}

func (t *teeWriter) Write(p []byte) (int, error) {
	t.a.Write(p)
	return t.b.Write(p)
}

// Exited reports whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Done is closed when the process has ended.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Kill sends SIGKILL and waits for the process to end.
func (p *Proc) Kill() {
	_ = p.Cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// Stop freezes the process (SIGSTOP); Cont thaws it (SIGCONT).
func (p *Proc) Stop() { _ = p.Cmd.Process.Signal(syscall.SIGSTOP) }

// Cont thaws a process frozen by Stop.
func (p *Proc) Cont() { _ = p.Cmd.Process.Signal(syscall.SIGCONT) }

// Term sends SIGTERM and waits up to timeout, then kills. It returns the
// exit error, or an error if it had to kill.
func (p *Proc) Term(timeout time.Duration) error {
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		p.Kill()
		return fmt.Errorf("still running %s after SIGTERM; killed", timeout)
	}
}

// RSS is the process's resident set size in bytes (Linux).
func (p *Proc) RSS() (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", p.Cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmRSS")
}

// WaitHTTP polls url until it answers want, or timeout passes, or stop is
// closed (a process that died).
func WaitHTTP(url string, want int, timeout time.Duration, stop <-chan struct{}) error {
	deadline := time.Now().Add(timeout)
	hc := &http.Client{Timeout: time.Second}
	last := "no answer"
	for time.Now().Before(deadline) {
		res, err := hc.Get(url)
		if err == nil {
			res.Body.Close()
			if res.StatusCode == want {
				return nil
			}
			last = res.Status
		} else {
			last = err.Error()
		}
		select {
		case <-stop:
			return fmt.Errorf("%s: the process exited while waiting for %d", url, want)
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s never answered %d in %s (last: %s)", url, want, timeout, last)
}

// NATSServer is an external nats-server process with JetStream.
type NATSServer struct {
	Bin, Dir string
	Addr     string // host:port
	// Extra arguments (a cluster node's name and routes).
	Extra []string
	P     *Proc
}

// URL is the server's client URL.
func (n *NATSServer) URL() string { return "nats://" + n.Addr }

// Start (re)starts the server on the same port and store directory.
func (n *NATSServer) Start() error {
	_, port, err := net.SplitHostPort(n.Addr)
	if err != nil {
		return err
	}
	args := append([]string{"-js", "-sd", n.Dir, "-a", "127.0.0.1", "-p", port}, n.Extra...)
	p, err := Start(n.Bin, args, os.Environ(), nil)
	if err != nil {
		return err
	}
	n.P = p
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if p.Exited() {
			return fmt.Errorf("nats-server exited:\n%s", p.Logs)
		}
		if c, err := net.DialTimeout("tcp", n.Addr, 200*time.Millisecond); err == nil {
			c.Close()
			// JetStream needs a moment after the port opens; the relay copes
			// either way, and readiness is what the tests watch.
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	p.Kill()
	return fmt.Errorf("nats-server did not listen on %s:\n%s", n.Addr, p.Logs)
}

// Kill stops the server with SIGKILL.
func (n *NATSServer) Kill() {
	if n.P != nil && !n.P.Exited() {
		n.P.Kill()
	}
}

// CtxSleep sleeps d or until ctx ends.
func CtxSleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// NATSCluster is a JetStream cluster of nats-server processes with routes
// on loopback, one store directory each: the fleet's bus.
type NATSCluster struct {
	Nodes []*NATSServer
	// ClusterAddrs are the route listen addresses, by node.
	ClusterAddrs []string
}

// NewNATSCluster prepares n nodes (not started) under dir.
func NewNATSCluster(bin, dir string, n int) (*NATSCluster, error) {
	addrs, err := FreeAddrs(2 * n)
	if err != nil {
		return nil, err
	}
	c := &NATSCluster{}
	for i := range n {
		d := filepath.Join(dir, fmt.Sprintf("nats-%d", i+1))
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
		c.Nodes = append(c.Nodes, &NATSServer{Bin: bin, Dir: d, Addr: addrs[i]})
		c.ClusterAddrs = append(c.ClusterAddrs, addrs[n+i])
	}
	for i, node := range c.Nodes {
		var routes []string
		for j, a := range c.ClusterAddrs {
			if j != i {
				routes = append(routes, "nats://"+a)
			}
		}
		node.Extra = []string{
			"-n", fmt.Sprintf("n%d", i+1),
			"--cluster_name", "relay-test",
			"-cluster", "nats://" + c.ClusterAddrs[i],
			"-routes", strings.Join(routes, ","),
		}
	}
	return c, nil
}

// Start starts every node.
func (c *NATSCluster) Start() error {
	for _, n := range c.Nodes {
		if err := n.Start(); err != nil {
			c.Kill()
			return err
		}
	}
	return nil
}

// URL is the comma-separated client URL of every node, as bus.url takes it.
func (c *NATSCluster) URL() string {
	var us []string
	for _, n := range c.Nodes {
		us = append(us, n.URL())
	}
	return strings.Join(us, ",")
}

// Kill stops every node with SIGKILL.
func (c *NATSCluster) Kill() {
	for _, n := range c.Nodes {
		n.Kill()
	}
}
