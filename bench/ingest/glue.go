package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// serveGlue is the peer the relay is measured against: the glue a user
// would write by hand. A plain net/http handler verifies the Standard
// Webhooks signature with the reference library, reads buildId from the
// JSON body, publishes to an embedded JetStream (file store in dir, the
// server's default sync settings) with Nats-Msg-Id set to the webhook-id,
// and answers 202 after the publish is acknowledged. It runs in its own
// process (the bench starts its own binary with -serve-glue), with Go's
// default GOMAXPROCS and GOGC, and prints "listening ADDR" once it serves.
func serveGlue(addr, dir string, syncAlways bool) error {
	ns, err := server.NewServer(&server.Options{
		Host:      "127.0.0.1",
		Port:      -1,
		JetStream: true,
		StoreDir:  dir,
		NoSigs:    true,
		// -glue-sync-always: fsync every message before the ack, so
		// the glue's 202 means "on disk" like the relay's.
		SyncAlways: syncAlways,
	})
	if err != nil {
		return err
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		return errors.New("glue: the embedded nats-server did not start")
	}
	defer ns.Shutdown()
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name:     "CAKEWORK",
		Subjects: []string{"cakework.>"},
		Storage:  jetstream.FileStorage,
	}); err != nil {
		return err
	}
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		return err
	}
	http.HandleFunc("POST /webhooks/cakework", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if err := wh.Verify(body, r.Header); err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		var p struct {
			BuildID string `json:"buildId"`
		}
		if err := json.Unmarshal(body, &p); err != nil || p.BuildID == "" {
			http.Error(w, "need a JSON body with buildId", http.StatusBadRequest)
			return
		}
		if _, err := js.Publish(r.Context(), "cakework.build."+p.BuildID, body, jetstream.WithMsgID(r.Header.Get("webhook-id"))); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusAccepted)
	})
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	fmt.Printf("listening %s\n", ln.Addr())
	return http.Serve(ln, nil)
}

// startGlue runs this binary with -serve-glue in a new process and waits
// for its address. stop kills it and removes its store.
func startGlue() (string, int, func(), error) {
	exe, err := os.Executable()
	if err != nil {
		return "", 0, nil, err
	}
	dir, err := os.MkdirTemp("", "relay-bench-glue-*")
	if err != nil {
		return "", 0, nil, err
	}
	args := []string{"-serve-glue", "127.0.0.1:0", "-glue-dir", dir}
	if glueSyncAlways {
		args = append(args, "-glue-sync-always")
	}
	cmd := exec.Command(exe, args...)
	cmd.Stderr = os.Stderr
	// The environment is inherited: without GOMAXPROCS or GOGC in it, the
	// glue runs with Go's defaults, as a user's would, not the relay's tuning.
	out, err := cmd.StdoutPipe()
	if err != nil {
		os.RemoveAll(dir)
		return "", 0, nil, err
	}
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return "", 0, nil, err
	}
	stop := func() {
		cmd.Process.Kill()
		cmd.Wait()
		os.RemoveAll(dir)
	}
	got := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), "listening "); ok {
				got <- a
			}
		}
		close(got)
	}()
	select {
	case a, ok := <-got:
		if !ok {
			stop()
			return "", 0, nil, errors.New("glue: the process exited before it listened")
		}
		return a, cmd.Process.Pid, stop, nil
	case <-time.After(30 * time.Second):
		stop()
		return "", 0, nil, errors.New("glue: no address after 30 s")
	}
}

// procCPU is the CPU time (user and system) the process pid has used so
// far, from /proc/<pid>/stat; 0 where that cannot be read.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name (field 2) may hold spaces; the fields after it
	// start past its closing parenthesis. utime and stime are fields 14
	// and 15, in clock ticks (100 per second on Linux).
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	var ticks int64
	for _, s := range f[11:13] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0
		}
		ticks += n
	}
	return time.Duration(ticks) * (time.Second / 100)
}
