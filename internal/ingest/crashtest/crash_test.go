package crashtest

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/cakework-relay/cakework-relay/internal/bus"
	"github.com/cakework-relay/cakework-relay/internal/event"
	"github.com/cakework-relay/cakework-relay/internal/reliability"
)

const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

var relayBin string

// TestMain builds the real binary once (not under -short, where the test
// is skipped); the test runs it as users do and kills it as a crash would.
func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "relay-crash-bin")
	if err != nil {
		panic(err)
	}
	relayBin, err = reliability.Build(dir, reliability.RelayPkg, "relay")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type relay struct {
	cmd  *exec.Cmd
	logs *bytes.Buffer
}

func startRelay(t *testing.T, cfgPath, httpAddr string) *relay {
	t.Helper()
	cmd := exec.Command(relayBin, "serve", "-config", cfgPath)
	// A clean environment: no API key (poller off), no secrets from the
	// developer's shell.
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
	logs := &bytes.Buffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := &relay{cmd: cmd, logs: logs}
	deadline := time.Now().Add(15 * time.Second)
	for {
		res, err := http.Get("http://" + httpAddr + "/healthz")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == 200 {
				return r
			}
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("relay did not come up:\n%s", logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// webhook is one delivery the sender owes: the same webhook-id and body on
// every attempt, re-signed with the attempt's time, as Standard Webhooks
// senders retry.
type webhook struct {
	buildID, msgID string
	body           []byte
}

func send(hc *http.Client, wh *standardwebhooks.Webhook, url string, w webhook) (int, error) {
	now := time.Now()
	sig, err := wh.Sign(w.msgID, now, w.body)
	if err != nil {
		return 0, err
	}
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(w.body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("webhook-id", w.msgID)
	req.Header.Set("webhook-timestamp", strconv.FormatInt(now.Unix(), 10))
	req.Header.Set("webhook-signature", sig)
	res, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	res.Body.Close()
	return res.StatusCode, nil
}

func TestAcknowledgedWebhooksSurviveSIGKILLExactlyOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills the real binary")
	}
	const (
		total      = 3000
		senders    = 32
		killAfter  = 1000 // acknowledgements before the kill
		retryLimit = 20
	)
	dir := t.TempDir()
	addrs, err := reliability.FreeAddrs(2)
	if err != nil {
		t.Fatal(err)
	}
	httpAddr, natsAddr := addrs[0], addrs[1]
	cfgPath := filepath.Join(dir, "relay.yaml")
	cfg := fmt.Sprintf(`data_dir: %s
log: {level: warn}
http:
  listen: %s
bus:
  embedded: {listen: %s, token: %s}
ingest:
  cakework:
    secret: %s
`, filepath.Join(dir, "data"), httpAddr, natsAddr, reliability.NATSToken, secret)
	if err := reliability.PrepareDataDir(filepath.Join(dir, "data")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	url := "http://" + httpAddr + "/webhooks/cakework"
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	hooks := make([]webhook, total)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range hooks {
		id := fmt.Sprintf("%08x-%04x-4%03x-8%03x-%012x", rng.Uint32(), rng.Uint32()&0xffff, rng.Uint32()&0xfff, rng.Uint32()&0xfff, rng.Uint64()&0xffffffffffff)
		hooks[i] = webhook{buildID: id, msgID: "msg_" + id, body: fmt.Appendf(nil, `{"buildId":%q,"imageId":"img-%d"}`, id, i)}
	}

	// Phase 1: concurrent senders until the relay dies mid-flight.
	r1 := startRelay(t, cfgPath, httpAddr)
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: senders}}
	acked := make([]atomic.Bool, total)
	var nAcked atomic.Int64
	var killOnce sync.Once
	killed := make(chan struct{})
	next := make(chan int, total)
	for i := range hooks {
		next <- i
	}
	close(next)
	var wg sync.WaitGroup
	for s := 0; s < senders; s++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				select {
				case <-killed:
					return
				default:
				}
				code, err := send(hc, wh, url, hooks[i])
				if err == nil && (code == 202 || code == 200) {
					acked[i].Store(true)
					if nAcked.Add(1) >= killAfter {
						killOnce.Do(func() {
							r1.cmd.Process.Signal(syscall.SIGKILL)
							close(killed)
						})
					}
				} else if err == nil {
					t.Errorf("webhook %d: status %d", i, code)
				}
			}
		}()
	}
	wg.Wait()
	killOnce.Do(func() { close(killed) })
	r1.cmd.Wait()
	hc.CloseIdleConnections()
	before := nAcked.Load()
	if before >= total {
		t.Fatalf("all %d acknowledged before the kill; the test proves nothing", total)
	}
	t.Logf("phase 1: %d of %d acknowledged before SIGKILL", before, total)

	// Phase 2: restart and retry whatever was not acknowledged; resend some
	// that were, as a sender that missed the answer would.
	r2 := startRelay(t, cfgPath, httpAddr)
	defer func() {
		r2.cmd.Process.Signal(syscall.SIGTERM)
		r2.cmd.Wait()
	}()
	dups := 0
	for i := range hooks {
		wasAcked := acked[i].Load()
		if wasAcked && i%50 != 0 {
			continue
		}
		var code int
		for attempt := 0; ; attempt++ {
			code, err = send(hc, wh, url, hooks[i])
			if err == nil && (code == 202 || code == 200) {
				break
			}
			if attempt == retryLimit {
				t.Fatalf("webhook %d never acknowledged: %d %v\n%s", i, code, err, r2.logs)
			}
			time.Sleep(50 * time.Millisecond)
		}
		if wasAcked && code != 200 {
			t.Errorf("webhook %d was acknowledged before the kill, but its resend got %d, not 200 duplicate", i, code)
		}
		if code == 200 {
			dups++
		}
	}
	t.Logf("phase 2: retried; %d answered duplicate (committed before the kill or resent after an ack)", dups)

	// Every webhook on the stream exactly once.
	nc, err := nats.Connect("nats://"+natsAddr, nats.UserInfo(bus.UserSubscriber, reliability.NATSToken))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	stream, err := js.Stream(ctx, "CAKEWORK")
	if err != nil {
		t.Fatal(err)
	}
	for {
		info, err := stream.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Msgs >= total {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("only %d of %d events on the stream", info.State.Msgs, total)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Give the outbox a moment to publish anything extra it would publish.
	time.Sleep(500 * time.Millisecond)
	info, _ := stream.Info(ctx)
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int{}
	for i := range hooks {
		want[reliability.IDs.BuildStatusID(hooks[i].buildID, "succeeded")] = i
	}
	count := map[string]int{}
	for n := uint64(0); n < info.State.Msgs; n++ {
		m, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			t.Fatalf("read message %d of %d: %v", n, info.State.Msgs, err)
		}
		ev, err := event.Decode(m.Data())
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := want[ev.ID]; !ok {
			t.Fatalf("unexpected event %s %s", ev.Type, ev.ID)
		}
		count[ev.ID]++
	}
	for id, i := range want {
		if count[id] != 1 {
			t.Errorf("webhook %d (acknowledged before kill: %v) is on the stream %d times", i, acked[i].Load(), count[id])
		}
	}
	if info.State.Msgs != total {
		t.Errorf("%d messages on the stream, want %d", info.State.Msgs, total)
	}
}
