package statuspage_test

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/cakework-relay/cakework-relay/internal/cakework"
)

// browser is a headless Chromium tab, with every URL the page requested.
type browser struct {
	ctx context.Context

	mu   sync.Mutex
	urls []string
}

// newBrowser starts Debian's chromium headless, w×h. Without chromium the
// test is skipped, unless RELAY_REQUIRE_BROWSER is set (.ci/run sets it).
func newBrowser(t *testing.T, w, h int) *browser {
	t.Helper()
	path := ""
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			path = p
			break
		}
	}
	if path == "" {
		msg := "no chromium on PATH: the browser tests need it (apt-get install chromium; .ci/run installs it)"
		if os.Getenv("RELAY_REQUIRE_BROWSER") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox, // CI runs as root
		chromedp.WindowSize(w, h),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
	)
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelB := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelB(); cancelA() })
	// Start the browser and open the tab with no deadline (a deadline on
	// the first call would bind the browser's life to it).
	if err := chromedp.Do(ctx); err != nil {
		t.Fatal("start chromium:", err)
	}
	b := &browser{ctx: ctx}
	if err := chromedp.Listen(ctx, func(ev any) {
		if e, ok := ev.(*network.EventRequestWillBeSent); ok {
			b.mu.Lock()
			b.urls = append(b.urls, e.Request.URL)
			b.mu.Unlock()
		}
	}); err != nil {
		t.Fatal(err)
	}
	return b
}

// do runs steps, each call bounded by 10 s.
func (b *browser) do(t *testing.T, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// eval returns the value of a JavaScript expression.
func eval[T any](t *testing.T, b *browser, js string) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js))
	if err != nil {
		t.Fatalf("%s: %v", js, err)
	}
	return v
}

// waitJS waits up to d for a JavaScript expression to be true.
func (b *browser) waitJS(t *testing.T, d time.Duration, what, js string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, d+5*time.Second)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](js, chromedp.WithPollingTimeout(d), chromedp.WithPollingInterval(50*time.Millisecond))); err != nil {
		page, _ := chromedp.Run(b.ctx, chromedp.Evaluate[string](`document.body.innerText`))
		t.Fatalf("%s: not within %s: %v\npage text:\n%s", what, d, err, page)
	}
}

// clear empties the input of id, as a user deleting its text would.
func clear(id string) chromedp.Action[chromedp.Void] {
	return chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`(() => { const e = document.getElementById(%q); e.value = ''; e.dispatchEvent(new Event('input')); })()`, id))
}

// screenshot saves the whole page into $RELAY_ARTIFACTS (or the test's temp
// dir) and logs where.
func (b *browser) screenshot(t *testing.T, name string) string {
	t.Helper()
	dir := os.Getenv("RELAY_ARTIFACTS")
	if dir == "" {
		dir = t.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	png, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal("screenshot:", err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
	return path
}

// foreign lists the requested URLs that are not on host.
func (b *browser) foreign(host string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, s := range b.urls {
		u, err := url.Parse(s)
		if err != nil || (u.Scheme != "data" && u.Host != host) {
			out = append(out, s)
		}
	}
	return out
}

// The page in a real browser: nothing before sign-in; sign-in by
// keyboard; a VM started and a webhook posted afterwards appear without a
// reload; replaying a dead letter removes it; nothing is requested from
// any host but the relay; it fits 375 px.
func TestStatusPageInBrowser(t *testing.T) {
	r := startRelay(t, relayOptions{token: adminToken, poller: true})
	// Data the relay has before anyone signs in: a VM and a dead letter.
	r.sim.AddVM(cakework.VM{ID: "vmbefore", ImageID: "img"})
	r.postWebhook(t, `{"secret_marker":"before-sign-in"}`)
	waitFor(t, 10*time.Second, "a dead letter before sign-in", func() bool { return r.deadLetters(t) == 1 })

	b := newBrowser(t, 800, 800)
	host := strings.TrimPrefix(r.base, "http://")

	// Before sign-in: the sign-in form, and nothing of the relay's.
	// A phone's width (a window is at least 500 px wide, so emulate it).
	b.do(t, "open the page", chromedp.EmulateViewport(375, 800), chromedp.Navigate(r.base+"/"), chromedp.WaitVisible(chromedp.ID("token")))
	html := eval[string](t, b, `document.documentElement.outerHTML`)
	appHidden := eval[bool](t, b, `document.getElementById('app').hidden`)
	for _, leak := range []string{"vmbefore", "before-sign-in", "hook", "webhook.ci"} {
		if strings.Contains(html, leak) {
			t.Errorf("before sign-in the page shows %q", leak)
		}
	}
	if !appHidden {
		t.Error("before sign-in the relay's sections are visible")
	}

	// A wrong token is refused, with the reason.
	b.do(t, "wrong token", chromedp.SendKeys(chromedp.ID("token"), "nope"+kb.Enter))
	b.waitJS(t, 3*time.Second, "wrong-token error", `document.getElementById('signin-error').textContent.includes('wrong token')`)

	// Sign in by keyboard: type the token and press Enter.
	b.do(t, "sign in", clear("token"), chromedp.SendKeys(chromedp.ID("token"), adminToken+kb.Enter))
	b.waitJS(t, 3*time.Second, "signed in", `!document.getElementById('app').hidden && document.getElementById('conn').textContent === 'live'`)
	b.waitJS(t, 3*time.Second, "the DLQ listed", `document.querySelectorAll('#dlq tbody tr[data-key]').length === 1`)
	// A marker that a reload would lose.
	b.do(t, "mark the page", chromedp.Evaluate[chromedp.Void](`window.noReload = true`))

	// A VM started and a webhook posted now appear, without a reload.
	r.sim.AddVM(cakework.VM{ID: "vmlive", ImageID: "img"})
	r.postWebhook(t, `{"after":"sign-in"}`)
	b.waitJS(t, 5*time.Second, "vm.started of the new VM in the events",
		`[...document.querySelectorAll('#events li')].some(li => li.dataset.type === 'vm.started' && li.dataset.subject === 'vmlive')`)
	b.waitJS(t, 5*time.Second, "the new VM in the started VMs",
		`[...document.querySelectorAll('#vms tbody tr[data-key]')].some(tr => tr.dataset.key === 'vmlive')`)
	b.waitJS(t, 5*time.Second, "the webhook in the events",
		`[...document.querySelectorAll('#events li')].some(li => li.dataset.type === 'webhook.ci' && li.textContent.includes('sign-in'))`)

	// Filter the events by type, then by resource id.
	b.do(t, "filter by type", chromedp.SendKeys(chromedp.ID("filter-type"), "webhook.*"))
	b.waitJS(t, time.Second, "only webhook events shown",
		`(() => { const v = [...document.querySelectorAll('#events li')].filter(li => !li.hidden); return v.length > 0 && v.every(li => li.dataset.type === 'webhook.ci'); })()`)
	b.do(t, "filter by resource id", clear("filter-type"), chromedp.SendKeys(chromedp.ID("filter-subject"), "vmlive"))
	b.waitJS(t, time.Second, "only the new VM's events shown",
		`(() => { const v = [...document.querySelectorAll('#events li')].filter(li => !li.hidden); return v.length > 0 && v.every(li => li.dataset.subject === 'vmlive'); })()`)
	b.do(t, "clear the filter", clear("filter-subject"))

	// Replay the dead letters from the page once the target accepts: each
	// is removed from the list. (The second webhook was dead-lettered too.)
	waitFor(t, 5*time.Second, "the second dead letter", func() bool { return r.deadLetters(t) == 2 })
	b.waitJS(t, 7*time.Second, "two dead letters listed", `document.querySelectorAll('#dlq tbody tr[data-key]').length === 2`)
	r.fail.Store(false)
	for i := 2; i > 0; i-- {
		// Keyboard again: focus the first Replay button and press Enter.
		b.do(t, "replay", chromedp.Focus(chromedp.CSS("#dlq tbody tr[data-key] button")), chromedp.KeyEvent(kb.Enter))
		b.waitJS(t, 5*time.Second, "the replayed dead letter gone", fmt.Sprintf(`document.querySelectorAll('#dlq tbody tr[data-key]').length === %d`, i-1))
	}
	if r.deadLetters(t) != 0 || r.got.Load() != 2 {
		t.Fatalf("after replay: %d dead letters, %d delivered; want 0 and 2", r.deadLetters(t), r.got.Load())
	}

	// In a fleet /v1/status has a "cluster" section: the page shows the role.
	r.app.Core().HTTP.AddStatus("cluster", func() any {
		return map[string]string{"member": "relay-a", "role": "follower", "leader": "relay-b"}
	})
	b.waitJS(t, 3*time.Second, "the fleet role",
		`document.getElementById('role').textContent === 'follower' && document.getElementById('fleet').textContent.includes('leader: relay-b')`)

	if !eval[bool](t, b, `window.noReload === true`) {
		t.Error("the page was reloaded")
	}
	// 375 px wide: nothing wider than the screen.
	scrollW := eval[int](t, b, `document.documentElement.scrollWidth`)
	if scrollW > 375 {
		wide := eval[[]string](t, b, `[...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > 375).map(e => e.tagName + '#' + e.id + '.' + e.className + ' ' + Math.round(e.getBoundingClientRect().right))`)
		t.Errorf("at 375 px the page is %d px wide: %v", scrollW, wide)
	}
	b.screenshot(t, "statuspage-375.png")
	if f := b.foreign(host); len(f) > 0 {
		t.Errorf("the page requested other hosts than %s: %v", host, f)
	}
}
