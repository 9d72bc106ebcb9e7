package demo

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestDemoShowsEventsOfSeveralTypes(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the demo for several seconds")
	}
	var out, log bytes.Buffer
	sum, err := Run(context.Background(), Options{Duration: 8 * time.Second, Out: &out, Log: &log})
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	if len(sum) < 4 {
		t.Fatalf("event types %v, want at least 4\n%s", sum.Types(), out.String())
	}
	for _, want := range []string{"build.succeeded", "vm.started", "vm.log"} {
		if sum[want] == 0 {
			t.Errorf("no %s event; got %v", want, sum)
		}
	}
	// Each event is a console line naming its type.
	for _, typ := range sum.Types() {
		if !strings.Contains(out.String(), "  "+typ+" ") {
			t.Errorf("no console line for %s", typ)
		}
	}
	// The workload starts after the baseline sweep, so every VM shown
	// was seen starting.
	vmTypes := map[string][]string{}
	for _, line := range strings.Split(out.String(), "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && strings.HasPrefix(f[1], "vm.") {
			vmTypes[f[2]] = append(vmTypes[f[2]], f[1])
		}
	}
	for id, types := range vmTypes {
		if !slices.Contains(types, "vm.started") {
			t.Errorf("VM %s shown with %v but no vm.started", id, types)
		}
	}
	if first, _, _ := strings.Cut(out.String(), "\n"); !strings.Contains(first, "starting") {
		t.Errorf("the first line does not say the demo is starting: %q", first)
	}
	if !strings.Contains(out.String(), "status page:    http://") || !strings.Contains(out.String(), "sign in with the admin token demo-") {
		t.Error("the status page's address and token are not printed")
	}
	if !strings.Contains(out.String(), "Where to look next") {
		t.Error("no guide at the end")
	}
}
