package cakework_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/cakework"
	"github.com/cakework-relay/cakework-relay/internal/cakework/cakeworksim"
)

// BenchmarkGetVM is one small call through real HTTP to the sim.
func BenchmarkGetVM(b *testing.B) {
	e := newEnv(b, cakeworksim.Options{}, cakework.Options{})
	vm := e.sim.AddVM(cakework.VM{})
	ctx := context.Background()
	b.ResetTimer()
	for b.Loop() {
		if _, err := e.c.GetVM(ctx, vm.ID); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPageLogs drains 20,000 lines in pages of 1000.
func BenchmarkPageLogs(b *testing.B) {
	e := newEnv(b, cakeworksim.Options{}, cakework.Options{})
	vm := e.sim.AddVM(cakework.VM{})
	e.sim.SetVMQuiet(vm.ID, true)
	lines := make([]cakework.LogLine, 20000)
	for i := range lines {
		lines[i] = cakework.LogLine{Timestamp: epoch.Add(-time.Duration(i) * time.Millisecond).UnixMilli(), Message: fmt.Sprintf("GET /health 200 line %d", i)}
	}
	e.sim.AppendVMLogs(vm.ID, lines...)
	ctx := context.Background()
	b.ResetTimer()
	for b.Loop() {
		n := 0
		_, pages, err := e.c.PageLogs(ctx, cakework.LogVM, vm.ID, cakework.LogQuery{Batch: 1000, To: epoch}, 100,
			func(p cakework.LogPage, _ cakework.LogQuery) error { n += len(p.Lines); return nil })
		if err != nil || n != len(lines) || pages != 20 {
			b.Fatalf("pages=%d lines=%d err=%v", pages, n, err)
		}
	}
	b.ReportMetric(float64(len(lines))*float64(b.N)/b.Elapsed().Seconds(), "lines/s")
}
