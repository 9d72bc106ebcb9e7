package statuspage_test

import (
	"bytes"
	"context"
	"os"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/cakework-relay/cakework-relay/internal/demo"
)

// syncBuffer is the demo's output, read while it runs.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// The README's screenshot: the page during `relay demo`, signed in with the
// token the demo prints. It runs only when RELAY_DEMO_SCREENSHOT names the
// file to write (docs/statuspage.png):
//
//	RELAY_DEMO_SCREENSHOT=$PWD/docs/statuspage.png go test -run DemoScreenshot ./internal/statuspage/
func TestDemoScreenshot(t *testing.T) {
	path := os.Getenv("RELAY_DEMO_SCREENSHOT")
	if path == "" {
		t.Skip("set RELAY_DEMO_SCREENSHOT to the file to write (docs/statuspage.png)")
	}
	b := newBrowser(t, 1280, 900)
	var out syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := demo.Run(ctx, demo.Options{Out: &out, Log: &out, Duration: time.Minute})
		done <- err
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error("demo:", err)
		}
	}()
	re := regexp.MustCompile(`status page: +(http://\S+) +sign in with the admin token (\S+)`)
	var m []string
	waitFor(t, 30*time.Second, "the demo's status page line", func() bool { m = re.FindStringSubmatch(out.String()); return m != nil })
	b.do(t, "sign in", chromedp.Navigate(m[1]), chromedp.WaitVisible(chromedp.ID("token")), chromedp.SendKeys(chromedp.ID("token"), m[2]+kb.Enter))
	b.waitJS(t, 5*time.Second, "signed in", `document.getElementById('conn').textContent === 'live'`)
	// Let the charts fill and a dead letter come.
	b.waitJS(t, 40*time.Second, "a dead letter and a few rate samples",
		`document.querySelectorAll('#dlq tbody tr[data-key]').length > 0 && document.getElementById('rates-span').textContent.includes('last 20s')`)
	png, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot of the demo's page: %s", path)
}
