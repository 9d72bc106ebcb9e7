package demo

import (
	"bytes"
	"context"
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
	if !strings.Contains(out.String(), "Where to look next") {
		t.Error("no guide at the end")
	}
}
