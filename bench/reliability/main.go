// Command reliability runs the long forms of the relay's reliability suite
// (internal/reliability) and prints their figures:
//
//	go run ./bench/reliability soak  [-duration 30m] [-rate 1000] [-vms 5000]
//	go run ./bench/reliability crash [-iterations 50]
//	go run ./bench/reliability natsoutage [-outage 30s]
//	go run ./bench/reliability fleet [-kills 20] [-freezes 10]
//	go run ./bench/reliability fleetsinks [-runs 5] [-load 10s]
//
// It builds the relay (and nats-server) from this module first.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/reliability"
)

func main() { os.Exit(run(os.Args[1:])) }

func run(args []string) int {
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "usage: reliability soak|crash|natsoutage|fleet|fleetsinks [flags]")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	dir, err := os.MkdirTemp("", "relay-reliability-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	bin, err := reliability.Build(dir, reliability.RelayPkg, "relay")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	switch args[0] {
	case "soak":
		return soak(ctx, bin, dir, args[1:])
	case "crash":
		return crash(ctx, bin, dir, args[1:])
	case "natsoutage":
		return natsOutage(ctx, bin, dir, args[1:])
	case "fleet":
		return fleetChaos(ctx, bin, dir, args[1:])
	case "fleetsinks":
		return fleetSinks(ctx, bin, dir, args[1:])
	}
	fmt.Fprintf(os.Stderr, "unknown mode %q\n", args[0])
	return 2
}

func soak(ctx context.Context, bin, dir string, args []string) int {
	fs := flag.NewFlagSet("soak", flag.ExitOnError)
	o := reliability.SoakOptions{RelayBin: bin, Dir: dir, Out: os.Stdout, Callback: true}
	fs.DurationVar(&o.Duration, "duration", 30*time.Minute, "how long")
	fs.IntVar(&o.Rate, "rate", 1000, "generic webhooks per second")
	fs.IntVar(&o.Senders, "senders", 32, "webhook sender connections")
	fs.IntVar(&o.VMs, "vms", 5000, "simulated VMs (all started)")
	fs.DurationVar(&o.VMLogEvery, "vm-log-every", time.Minute, "each VM logs a line this often")
	fs.Float64Var(&o.Churn, "churn", 5, "VM state changes per second")
	fs.DurationVar(&o.SeenTTL, "seen-ttl", 2*time.Minute, "ingest.seen_ttl")
	fs.DurationVar(&o.MaxAge, "max-age", 5*time.Minute, "bus.max_age (bounds the JetStream store)")
	fs.DurationVar(&o.Sample, "sample", time.Minute, "sampling interval")
	logPath := fs.String("relay-log", "", "copy the relay's output to this file")
	cgroup := fs.String("cgroup", "", "run the relay in a memory cgroup of this size (say 256MiB; needs root): a container of that size, which relay serve sizes its memory limit from")
	relayEnv := fs.String("relay-env", "", "comma-separated VAR=value added to the relay's environment (say GOMEMLIMIT=230MiB)")
	fs.Parse(args)
	if *relayEnv != "" {
		o.RelayEnv = strings.Split(*relayEnv, ",")
	}
	if *cgroup != "" {
		cg, err := reliability.NewMemCgroup(fmt.Sprintf("relay-soak-%d", os.Getpid()), *cgroup)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		o.Cgroup = cg
		defer func() {
			fmt.Printf("# %s\n", cg.Report())
			cg.Close()
		}()
	}
	if *logPath != "" {
		f, err := os.Create(*logPath)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer f.Close()
		o.RelayLog = f
	}
	fmt.Printf("# soak: %s, %d webhooks/s over %d senders, %d VMs logging every %s, churn %.1f/s, seen_ttl %s, max_age %s, callback sink vm.*\n",
		o.Duration, o.Rate, o.Senders, o.VMs, o.VMLogEvery, o.Churn, o.SeenTTL, o.MaxAge)
	res, err := reliability.Soak(ctx, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ps := res.Problems()
	fmt.Printf("# total: sent %d, acked %d, non-2xx %d, errors %d, %d problems\n", res.Sent, res.Acked, res.Non2xx, res.Errors, len(ps))
	for _, p := range ps {
		fmt.Println("# problem:", p)
	}
	if len(ps) > 0 {
		return 1
	}
	return 0
}

func crash(ctx context.Context, bin, dir string, args []string) int {
	fs := flag.NewFlagSet("crash", flag.ExitOnError)
	o := reliability.CrashOptions{RelayBin: bin, Dir: dir, Logf: logf}
	fs.IntVar(&o.Iterations, "iterations", 50, "SIGKILLs")
	fs.DurationVar(&o.MinUp, "min-up", 500*time.Millisecond, "earliest kill after the relay is up")
	fs.DurationVar(&o.MaxUp, "max-up", 3*time.Second, "latest kill after the relay is up")
	fs.Float64Var(&o.Rate, "rate", 300, "webhooks per second")
	fs.IntVar(&o.VMs, "vms", 8, "log VMs (and as many churning VMs)")
	fs.IntVar(&o.FailEvery, "fail-every", 5, "the callback receiver fails every n-th request")
	seed := fs.Uint64("seed", uint64(time.Now().UnixNano()), "random seed")
	fs.Parse(args)
	o.Seed = *seed
	// Enough webhooks to keep the load on through every iteration (a restart
	// takes about a second).
	o.Webhooks = int(o.Rate * float64(o.Iterations) * ((o.MinUp+o.MaxUp).Seconds()/2 + 1))
	fmt.Printf("# crash matrix: %d iterations, kill %s..%s after up, %.0f webhooks/s, %d log VMs, callback fails every %d, seed %d\n",
		o.Iterations, o.MinUp, o.MaxUp, o.Rate, o.VMs, o.FailEvery, o.Seed)
	res, err := reliability.CrashMatrix(ctx, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println(res)
	return problemsExit(res.Problems)
}

func natsOutage(ctx context.Context, bin, dir string, args []string) int {
	fs := flag.NewFlagSet("natsoutage", flag.ExitOnError)
	o := reliability.OutageOptions{RelayBin: bin, Dir: dir, Logf: logf}
	fs.DurationVar(&o.Before, "before", 10*time.Second, "load before the outage")
	fs.DurationVar(&o.Outage, "outage", 30*time.Second, "how long nats-server is down")
	fs.DurationVar(&o.After, "after", 15*time.Second, "load after the server is back")
	fs.Float64Var(&o.Rate, "rate", 500, "webhooks per second")
	fs.IntVar(&o.OutboxLimit, "outbox-limit", 5000, "ingest.outbox_limit")
	fs.IntVar(&o.VMs, "vms", 8, "log VMs (and as many churning VMs)")
	fs.Parse(args)
	if o.NATSBin = buildNATS(dir); o.NATSBin == "" {
		return 1
	}
	fmt.Printf("# external NATS outage: %s up, %s down (SIGKILL), %s up again; %.0f webhooks/s, outbox_limit %d, %d log VMs\n",
		o.Before, o.Outage, o.After, o.Rate, o.OutboxLimit, o.VMs)
	res, err := reliability.NATSOutage(ctx, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Print(res)
	return problemsExit(res.Problems)
}

func fleetChaos(ctx context.Context, bin, dir string, args []string) int {
	fs := flag.NewFlagSet("fleet", flag.ExitOnError)
	o := reliability.FleetChaosOptions{RelayBin: bin, Dir: dir, Logf: logf}
	fs.IntVar(&o.Kills, "kills", 20, "leader SIGKILLs (each restarted)")
	fs.IntVar(&o.Freezes, "freezes", 10, "leader SIGSTOPs past the lease (each thawed)")
	fs.DurationVar(&o.LeaseTTL, "lease-ttl", 2*time.Second, "cluster.lease_ttl")
	fs.DurationVar(&o.Tick, "tick", time.Second, "every poller schedule")
	fs.IntVar(&o.LogVMs, "vms", 8, "log VMs (and as many quiet ones)")
	fs.IntVar(&o.IdleVMs, "idle", 4, "idle VMs to be auto-stopped")
	fs.DurationVar(&o.IdleAfter, "idle-after", 45*time.Second, "sinks.autostop.idle_after")
	fs.Parse(args)
	if o.NATSBin = buildNATS(dir); o.NATSBin == "" {
		return 1
	}
	fmt.Printf("# fleet: 3 relays on 3 NATS nodes, lease_ttl %s, ticks %s; %d leader kills, %d freezes, one NATS node killed half way; %d log VMs, %d idle VMs (idle_after %s)\n",
		o.LeaseTTL, o.Tick, o.Kills, o.Freezes, o.LogVMs, o.IdleVMs, o.IdleAfter)
	res, err := reliability.FleetChaos(ctx, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Print(res)
	return problemsExit(res.Problems)
}

// fleetSinks runs issue 17's failover scenario (webhooks round-robin to 3
// members; the Slack sink's active member killed, the callback sink's
// frozen and thawed) several times and prints each run's figures.
func fleetSinks(ctx context.Context, bin, dir string, args []string) int {
	fs := flag.NewFlagSet("fleetsinks", flag.ExitOnError)
	runs := fs.Int("runs", 5, "how many runs")
	o := reliability.FleetOptions{RelayBin: bin}
	fs.DurationVar(&o.Load, "load", 10*time.Second, "webhooks sent around each fault")
	fs.DurationVar(&o.Freeze, "freeze", 6*time.Second, "how long the frozen member stays frozen")
	fs.DurationVar(&o.Settle, "settle", 90*time.Second, "bound on the wait for every event at the callback")
	fs.Parse(args)
	if o.NATSBin = buildNATS(dir); o.NATSBin == "" {
		return 1
	}
	fmt.Printf("# fleet sinks: 3 relays on 3 NATS nodes, webhooks round-robin for %s around each fault; %d runs\n", o.Load, *runs)
	var problems []string
	for i := range *runs {
		run := o
		run.Dir = filepath.Join(dir, fmt.Sprintf("run%d", i+1))
		if err := os.MkdirAll(run.Dir, 0o755); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		res, err := reliability.FleetFailover(ctx, run)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Printf("run %d: %s\n", i+1, res)
		problems = append(problems, res.Problems...)
	}
	return problemsExit(problems)
}

// buildNATS builds nats-server into dir, or says why not and returns "".
func buildNATS(dir string) string {
	bin, err := reliability.Build(dir, reliability.NATSPkg, "nats-server")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return ""
	}
	return bin
}

// problemsExit prints each problem and is the exit code: 1 if there is one.
func problemsExit(problems []string) int {
	for _, p := range problems {
		fmt.Println("PROBLEM:", p)
	}
	if len(problems) > 0 {
		return 1
	}
	return 0
}

func logf(f string, a ...any) { fmt.Printf("  "+f+"\n", a...) }
