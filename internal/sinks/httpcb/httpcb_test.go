package httpcb_test

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/event"
	"github.com/cakework-relay/cakework-relay/internal/sinks"
	"github.com/cakework-relay/cakework-relay/internal/sinks/httpcb"
	"github.com/cakework-relay/cakework-relay/internal/sinks/sinktest"
)

func TestConformance(t *testing.T) {
	sinktest.Run(t, func(t *testing.T, log *slog.Logger) sinktest.Fixture {
		rcv := newReceiver(t)
		var mode sinktest.Mode
		var after time.Duration
		rcv.setScript(func(int, event.Event) answer {
			switch mode {
			case sinktest.Transient:
				return answer{status: http.StatusServiceUnavailable}
			case sinktest.Throttled:
				return answer{status: http.StatusTooManyRequests, header: map[string]string{"Retry-After": itoa(int(after / time.Second))}}
			case sinktest.Permanent:
				return answer{status: http.StatusBadRequest}
			case sinktest.Down:
				return answer{hangup: true}
			}
			return answer{status: http.StatusNoContent}
		})
		// Credentials in the URL and a header must not leak either.
		url := strings.Replace(rcv.srv.URL, "http://", "http://hook-user:url-password-42@", 1) + "/hook?token=url-token-99"
		s, err := httpcb.New(httpcb.Config{
			Name: "contract", URL: url, Secret: testSecret,
			Headers: map[string]string{"Authorization": "Bearer header-token-77"},
			Timeout: 5 * time.Second,
		}, httpcb.Options{Logger: log})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close(context.Background()) })
		return sinktest.Fixture{
			Sender: s,
			SetMode: func(m sinktest.Mode, d time.Duration) {
				rcv.mu.Lock()
				mode, after = m, d
				rcv.mu.Unlock()
			},
			Delivered: func() int { return len(rcv.acceptedEvents()) },
			Secrets:   []string{testSecret, strings.TrimPrefix(testSecret, "whsec_"), "url-password-42", "url-token-99", "header-token-77"},
		}
	})
}

func itoa(n int) string { return strconv.Itoa(n) }

func newSender(t *testing.T, rcv *receiver, mod func(*httpcb.Config)) *httpcb.Sender {
	t.Helper()
	c := httpcb.Config{Name: "app", URL: rcv.srv.URL + "/hook", Secret: testSecret, Timeout: 5 * time.Second}
	if mod != nil {
		mod(&c)
	}
	s, err := httpcb.New(c, httpcb.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(context.Background()) })
	return s
}

func TestRequestShape(t *testing.T) {
	rcv := newReceiver(t)
	s := newSender(t, rcv, func(c *httpcb.Config) {
		c.Headers = map[string]string{"X-Team": "infra", "webhook-id": "spoofed", "Content-Type": "text/plain"}
	})
	ev := sinktest.Event("build", "b1", "succeeded", 1)
	if r := s.Send(context.Background(), ev); r.Outcome != sinks.Done {
		t.Fatal(r.Err)
	}
	rcv.checkClean()
	h := rcv.headers[0]
	if h.Get("X-Team") != "infra" || h.Get("webhook-id") != ev.ID || h.Get("Content-Type") != httpcb.ContentType {
		t.Fatalf("headers: %v", h)
	}
	if !strings.HasPrefix(h.Get("webhook-signature"), "v1,") {
		t.Fatalf("signature %q", h.Get("webhook-signature"))
	}
}

func TestClassification(t *testing.T) {
	date := time.Now().Add(90 * time.Second).UTC().Format(http.TimeFormat)
	cases := []struct {
		status  int
		header  map[string]string
		want    sinks.Outcome
		after   time.Duration // minimum
		disable bool
	}{
		{200, nil, sinks.Done, 0, false},
		{202, nil, sinks.Done, 0, false},
		{204, nil, sinks.Done, 0, false},
		{408, nil, sinks.Retry, 0, false},
		{425, nil, sinks.Retry, 0, false},
		{429, map[string]string{"Retry-After": "3"}, sinks.Retry, 3 * time.Second, false},
		{503, map[string]string{"Retry-After": date}, sinks.Retry, 80 * time.Second, false},
		{500, nil, sinks.Retry, 0, false},
		{502, nil, sinks.Retry, 0, false},
		{400, nil, sinks.GiveUp, 0, false},
		{401, nil, sinks.GiveUp, 0, false},
		{404, nil, sinks.GiveUp, 0, false},
		{422, nil, sinks.GiveUp, 0, false},
		{302, map[string]string{"Location": "/elsewhere"}, sinks.GiveUp, 0, false},
		{410, nil, sinks.GiveUp, 0, true},
	}
	for _, c := range cases {
		t.Run(http.StatusText(c.status), func(t *testing.T) {
			rcv := newReceiver(t)
			rcv.setScript(func(int, event.Event) answer { return answer{status: c.status, header: c.header} })
			r := newSender(t, rcv, nil).Send(context.Background(), sinktest.Event("vm", "v1", "started", 1))
			if r.Outcome != c.want || r.Disable != c.disable {
				t.Fatalf("%d: got %v disable=%v (%v)", c.status, r.Outcome, r.Disable, r.Err)
			}
			if r.After < c.after || (c.after == 0 && r.After != 0) || r.After > c.after+15*time.Second {
				t.Fatalf("%d: retry after %s, want about %s", c.status, r.After, c.after)
			}
			if c.want != sinks.Done && !strings.Contains(r.Err.Error(), itoa(c.status)) {
				t.Fatalf("error %q does not give the status", r.Err)
			}
		})
	}
}

func TestTimeout(t *testing.T) {
	rcv := newReceiver(t)
	rcv.setScript(func(int, event.Event) answer { return answer{delay: 500 * time.Millisecond} })
	s := newSender(t, rcv, func(c *httpcb.Config) { c.Timeout = 50 * time.Millisecond })
	r := s.Send(context.Background(), sinktest.Event("vm", "v1", "started", 1))
	if r.Outcome != sinks.Retry || !strings.Contains(r.Err.Error(), "timeout") {
		t.Fatalf("got %v %v", r.Outcome, r.Err)
	}
}

func TestConfigErrorsHideSecrets(t *testing.T) {
	_, err := httpcb.New(httpcb.Config{Name: "x", URL: "ftp://u:pw-secret@h/x", Secret: "whsec_not*base64secret"}, httpcb.Options{})
	if err == nil {
		t.Fatal("no error")
	}
	for _, s := range []string{"pw-secret", "not*base64secret"} {
		if strings.Contains(err.Error(), s) {
			t.Fatalf("error quotes a secret: %v", err)
		}
	}
	if !errors.Is(err, err) || !strings.Contains(err.Error(), "secret") || !strings.Contains(err.Error(), "url") {
		t.Fatalf("error does not say what is wrong: %v", err)
	}
}
