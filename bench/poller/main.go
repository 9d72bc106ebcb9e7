// Command poller measures the poller against the in-process simulator: API
// calls per VM sweep, sweep time and memory at 10,000 VMs, and a logs tick
// over 1,000 active streams.
//
//	go run ./bench/poller [-vms 10000] [-streams 1000] [-lines 20]
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net/http/httptest"
	"os"
	"runtime"
	"runtime/pprof"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/cakework"
	"github.com/cakework-relay/cakework-relay/internal/cakework/cakeworksim"
	"github.com/cakework-relay/cakework-relay/internal/poller"
	"github.com/cakework-relay/cakework-relay/internal/state"
)

func main() {
	nVMs := flag.Int("vms", 10000, "VMs in the account")
	nStreams := flag.Int("streams", 1000, "started VMs whose logs are tailed")
	nLines := flag.Int("lines", 20, "new lines per stream before the busy logs tick")
	changes := flag.Int("changes", 100, "state changes before the change sweep")
	gone := flag.Int("gone", 10, "VMs removed before the change sweep")
	memprofile := flag.String("memprofile", "", "write an allocation profile here at the end")
	flag.Parse()
	if *memprofile != "" {
		runtime.MemProfileRate = 64 << 10
		defer func() {
			f, err := os.Create(*memprofile)
			if err != nil {
				log.Fatal(err)
			}
			defer f.Close()
			if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
				log.Fatal(err)
			}
		}()
	}
	if err := run(*nVMs, *nStreams, *nLines, *changes, *gone); err != nil {
		log.Fatal(err)
	}
}

func heapMB() float64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return float64(m.HeapAlloc) / (1 << 20)
}

func allocMB() float64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return float64(m.TotalAlloc) / (1 << 20)
}

func run(nVMs, nStreams, nLines, nChanges, nGone int) error {
	ctx := context.Background()
	sim := cakeworksim.New(cakeworksim.Options{APIKey: "k", VMLogEvery: 10000 * time.Hour})
	api := httptest.NewServer(sim.Handler())
	defer api.Close()
	base := time.Now().Add(-time.Hour).UTC()
	ids := make([]string, nVMs)
	for i := range nVMs {
		st := cakework.VMStopped
		if i < nStreams {
			st = cakework.VMStarted
		}
		ids[i] = fmt.Sprintf("vm-%05d", i)
		sim.AddVM(cakework.VM{ID: ids[i], State: st, CreatedAt: base.Add(time.Duration(i) * time.Millisecond)})
	}
	dir, err := os.MkdirTemp("", "poller-bench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	store, err := state.Open(state.Options{Dir: dir})
	if err != nil {
		return err
	}
	defer store.Close()
	heap0 := heapMB()
	p, err := poller.New(poller.Options{
		Config: poller.Config{
			Logs: poller.LogsConfig{Batch: 500, MaxPages: 10, VMs: true},
		},
		Cakework: cakework.Options{BaseURL: api.URL, APIKey: "k"},
		Store:    poller.StateStore(store),
	})
	if err != nil {
		return err
	}
	if err := p.Start(ctx); err != nil {
		return err
	}
	defer p.Stop(ctx)

	sweep := func(name string) error {
		sim.ResetCalls()
		a0 := allocMB()
		start := time.Now()
		if err := p.TickVMs(ctx); err != nil {
			return err
		}
		took := time.Since(start)
		c := sim.Calls()
		fmt.Printf("%-22s %8s  calls %4d (listVMs %d, getVM %d)  alloc %6.1f MB  outbox %d\n",
			name, took.Round(time.Millisecond), sim.TotalCalls(), c[cakeworksim.RouteListVMs], c[cakeworksim.RouteGetVM],
			allocMB()-a0, store.OutboxDepth())
		return nil
	}
	fmt.Printf("%d VMs, list page 100, %d started\n", nVMs, nStreams)
	if err := sweep("baseline sweep"); err != nil {
		return err
	}
	if err := sweep("steady sweep"); err != nil {
		return err
	}
	for i := range nChanges {
		sim.SetVMState(ids[nStreams+i], "suspended")
	}
	for i := range nGone {
		sim.RemoveVM(ids[nVMs-1-i])
	}
	if err := sweep(fmt.Sprintf("sweep, %d chg %d gone", nChanges, nGone)); err != nil {
		return err
	}
	if err := sweep("steady sweep"); err != nil {
		return err
	}
	fmt.Printf("heap after GC: %.1f MB before the poller, %.1f MB with %d VMs known (sim included)\n", heap0, heapMB(), nVMs)

	logs := func(name string) error {
		sim.ResetCalls()
		d0 := store.OutboxDepth()
		a0 := allocMB()
		start := time.Now()
		if err := p.TickLogs(ctx); err != nil {
			return err
		}
		fmt.Printf("%-22s %8s  calls %4d  events %d  alloc %6.1f MB\n",
			name, time.Since(start).Round(time.Millisecond), sim.TotalCalls(), store.OutboxDepth()-d0, allocMB()-a0)
		return nil
	}
	// Baseline VMs are tailed from the baseline: write lines after it.
	time.Sleep(1100 * time.Millisecond)
	for i := range nStreams {
		for j := range nLines {
			sim.AppendVMLogs(ids[i], cakework.LogLine{Message: fmt.Sprintf("line %d of %s", j, ids[i])})
		}
	}
	if err := logs(fmt.Sprintf("logs, %d new lines", nLines)); err != nil {
		return err
	}
	if err := logs("logs, nothing new"); err != nil {
		return err
	}
	fmt.Printf("heap after GC: %.1f MB\n", heapMB())
	return nil
}
