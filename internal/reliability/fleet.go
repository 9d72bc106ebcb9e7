package reliability

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

// Fleet is n relay processes on one NATS cluster: cluster.enabled, the
// same stream, bus.replicas 3.
type Fleet struct {
	NATS   *NATSCluster
	Relays []*Relay
}

// StartFleet starts a 3-node NATS cluster and n relays (members m1..mn)
// whose configs cfg gives (DataDir, HTTPAddr, BusURL, Member and
// Replicas are filled in).
func StartFleet(relayBin, natsBin, dir string, n int, cfg func(i int) RelayConfig) (*Fleet, error) {
	nc, err := NewNATSCluster(natsBin, dir, 3)
	if err != nil {
		return nil, err
	}
	if err := nc.Start(); err != nil {
		return nil, err
	}
	f := &Fleet{NATS: nc}
	if err := nc.WaitJetStream(context.Background(), 3, 30*time.Second); err != nil {
		f.Stop()
		return nil, err
	}
	addrs, err := FreeAddrs(n)
	if err != nil {
		f.Stop()
		return nil, err
	}
	for i := range n {
		c := cfg(i)
		rdir := filepath.Join(dir, fmt.Sprintf("m%d", i+1))
		if err := os.MkdirAll(rdir, 0o755); err != nil {
			f.Stop()
			return nil, err
		}
		c.DataDir, c.HTTPAddr, c.BusURL = filepath.Join(rdir, "data"), addrs[i], nc.URL()
		c.Member, c.Replicas = fmt.Sprintf("m%d", i+1), 3
		r, err := NewRelay(relayBin, rdir, c)
		if err != nil {
			f.Stop()
			return nil, err
		}
		if err := r.Start(); err != nil {
			f.Stop()
			return nil, err
		}
		f.Relays = append(f.Relays, r)
	}
	return f, nil
}

// Stop terminates every relay and NATS node.
func (f *Fleet) Stop() {
	for _, r := range f.Relays {
		if r.P != nil && !r.P.Exited() {
			r.P.Cont()
			_ = r.P.Term(10 * time.Second)
		}
	}
	f.NATS.Kill()
}

// ClusterStatus is /v1/status's "cluster".
type ClusterStatus struct {
	Member string `json:"member"`
	Role   string `json:"role"`
	Leader string `json:"leader"`
}

// Cluster reads relay r's /v1/status "cluster".
func (r *Relay) Cluster(ctx context.Context) (ClusterStatus, error) {
	st, err := r.Status(ctx)
	return st.Cluster, err
}

// Leaders lists the running members that say they lead.
func (f *Fleet) Leaders(ctx context.Context) []int {
	var out []int
	for i, r := range f.Relays {
		if r.P == nil || r.P.Exited() {
			continue
		}
		if st, err := r.Cluster(ctx); err == nil && st.Role == "leader" {
			out = append(out, i)
		}
	}
	return out
}

// WaitLeader waits until exactly one member says it leads, other than
// not (-1 for any), and returns it.
func (f *Fleet) WaitLeader(ctx context.Context, timeout time.Duration, not int) (int, error) {
	deadline := time.Now().Add(timeout)
	for {
		if ls := f.Leaders(ctx); len(ls) == 1 && ls[0] != not {
			return ls[0], nil
		}
		if time.Now().After(deadline) {
			return -1, fmt.Errorf("no single leader (other than member %d) within %s", not+1, timeout)
		}
		if err := CtxSleep(ctx, 50*time.Millisecond); err != nil {
			return -1, err
		}
	}
}

// CheckAutostops checks auto-stop's events on the stream against the
// simulator: every VM auto-stopped got one vm.idle and one vm.autostopped
// (one idle period each: the VMs never start again), each VM in want among
// them, and stopVM stopped each of them once (stopsDone: calls that
// stopped a VM; repeats answered 409 are allowed).
func CheckAutostops(msgs []StreamMsg, stopsDone int, want []string) []string {
	idle, auto := map[string]int{}, map[string]int{}
	for _, m := range msgs {
		switch m.Event.ShortType() {
		case "vm.idle":
			idle[m.Event.Subject]++
		case "vm.autostopped":
			auto[m.Event.Subject]++
		}
	}
	var probs []string
	for _, id := range want {
		if auto[id] == 0 {
			probs = append(probs, fmt.Sprintf("%s: no vm.autostopped on the stream", id))
		}
	}
	for id, n := range auto {
		if n != 1 || idle[id] != 1 {
			probs = append(probs, fmt.Sprintf("%s: %d vm.idle and %d vm.autostopped, want 1 each", id, idle[id], n))
		}
	}
	// A stop call cut off by the end of a term (the leader lost its
	// lease while the call was in flight) is made again by the next
	// leader and answered 409: the cluster package's doc says so. So
	// calls may repeat; a VM is stopped once.
	if stopsDone != len(auto) {
		probs = append(probs, fmt.Sprintf("stopVM stopped %d VMs for %d auto-stopped, want once each", stopsDone, len(auto)))
	}
	return probs
}

// Admin calls the admin API of r and returns the status and body.
func (r *Relay) Admin(ctx context.Context, method, path string) (int, string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, r.URL(path), nil)
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Authorization", "Bearer "+AdminToken)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b), nil
}
