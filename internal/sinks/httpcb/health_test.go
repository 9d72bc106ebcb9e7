package httpcb_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/event"
	"github.com/cakework-relay/cakework-relay/internal/sinks/sinktest"
)

// A failing endpoint is loud once: one WARN naming the endpoint and the
// answer when sends start failing, one when a send succeeds again, and
// /readyz stays 200 but says "degraded" in between.
func TestFailingEndpointWarnsOncePerTransition(t *testing.T) {
	env := sinktest.NewEnv(t)
	rcv := newReceiver(t)
	held, release := make(chan struct{}), make(chan struct{})
	rcv.setScript(func(n int, _ event.Event) answer {
		switch {
		case n < 3:
			return answer{status: http.StatusServiceUnavailable}
		case n == 3:
			close(held)
			<-release
			return answer{status: http.StatusServiceUnavailable}
		}
		return answer{status: http.StatusAccepted}
	})
	clk := sinktest.NewStepClock(time.Now())
	r := startRelay(t, env, rcv, clk, nil)
	env.Publish(t, sinktest.Event("build", "b1", "failed", 1))

	<-held // two sends failed, the third is in flight
	ready := readyz(t, r)
	if ready.Status != "degraded" || len(ready.Degraded) != 1 || !strings.HasPrefix(ready.Degraded[0], "sinks: app failing since") {
		t.Fatalf("/readyz while failing: %+v", ready)
	}
	// /readyz answers anyone: neither the endpoint (its path may carry a
	// token) nor the error (it quotes the target's answer) is there.
	if strings.Contains(ready.Degraded[0], "127.0.0.1") || strings.Contains(ready.Degraded[0], "503") {
		t.Fatalf("/readyz shows the endpoint or the error: %+v", ready)
	}
	if st := r.status(t); !st.Failing || st.FailingSince == nil || st.Endpoint != rcv.srv.URL+"/hook" || !strings.Contains(st.LastError, "503") {
		t.Fatalf("status while failing: %+v", st)
	}
	close(release)
	sinktest.Eventually(t, 5*time.Second, "delivery", func() bool { return r.status(t).Delivered == 1 })

	logs := r.logs.String()
	if n := strings.Count(logs, "sink failing"); n != 1 {
		t.Fatalf("%d 'sink failing' lines for 3 failed sends, want 1:\n%s", n, logs)
	}
	var line string
	for _, l := range strings.Split(logs, "\n") {
		if strings.Contains(l, "sink failing") {
			line = l
		}
	}
	if !strings.Contains(line, "level=WARN") || !strings.Contains(line, rcv.srv.URL+"/hook") || !strings.Contains(line, "503") {
		t.Fatalf("the warning lacks the level, endpoint or status: %s", line)
	}
	if n := strings.Count(logs, "sink recovered"); n != 1 {
		t.Fatalf("%d 'sink recovered' lines, want 1:\n%s", n, logs)
	}
	if ready := readyz(t, r); ready.Status != "ok" || len(ready.Degraded) != 0 {
		t.Fatalf("/readyz after recovery: %+v", ready)
	}
	if st := r.status(t); st.Failing {
		t.Fatalf("status after recovery: %+v", st)
	}
}

type readyBody struct {
	Ready    bool     `json:"ready"`
	Status   string   `json:"status"`
	Degraded []string `json:"degraded"`
}

func readyz(t *testing.T, r *relay) readyBody {
	t.Helper()
	resp, err := http.Get(r.admin + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b readyBody
	if err := json.NewDecoder(resp.Body).Decode(&b); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || !b.Ready {
		t.Fatalf("/readyz: %d %+v; a failing sink must not make the relay unready", resp.StatusCode, b)
	}
	return b
}
