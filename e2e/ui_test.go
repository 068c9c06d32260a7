package e2e

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/moby/moby/client"

	dtmahttp "github.com/agentopia/dtma/http"
)

// The dashboard, driven in headless Chromium (Debian's chromium package)
// against the real binary and real containers.

// chromiumPath finds the browser: DTMA_CHROMIUM, else chromium or
// chromium-browser on PATH. Under CI=true a missing browser fails the
// test; locally it skips.
func chromiumPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("DTMA_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("chromium not found on PATH (set DTMA_CHROMIUM, or apt-get install chromium; .ci/run installs it)")
	}
	t.Skip("chromium not found on PATH; skipping the browser tests (apt-get install chromium)")
	return ""
}

// browser is one headless Chromium tab and what it saw: every request
// URL, and console errors, uncaught exceptions and browser log errors.
type browser struct {
	t    *testing.T
	ctx  context.Context
	shot string // screenshot directory

	mu        sync.Mutex
	requests  []string
	responses map[string]int64 // last status per URL
	errors    []string         // console errors, exceptions, log errors not about an HTTP status
	netErrors []string         // "Failed to load resource" entries the test expects (4xx it provokes, loads its kill cut)
	// agentDown is set by a test that kills the agent under the page: from
	// then on a request cut or refused at the connection is expected.
	agentDown bool
}

// expectAgentDown says the test is about to kill the agent the page talks
// to: loads that then fail at the connection (refused, reset, not
// connected, empty answer) are expected, not errors.
func (b *browser) expectAgentDown() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.agentDown = true
}

// cutByKill reports whether a failed load is one the agent's kill explains:
// once the test has said it kills the agent, any of Chromium's words for a
// load cut at the connection (which one depends on the moment of the kill:
// before, during or after a request). Caller holds mu.
func (b *browser) cutByKill(text string) bool {
	if !b.agentDown {
		return false
	}
	for _, f := range []string{
		"net::ERR_CONNECTION_REFUSED", "net::ERR_CONNECTION_RESET", "net::ERR_CONNECTION_CLOSED",
		"net::ERR_SOCKET_NOT_CONNECTED", "net::ERR_EMPTY_RESPONSE", "net::ERR_INCOMPLETE_CHUNKED_ENCODING",
	} {
		if strings.Contains(text, f) {
			return true
		}
	}
	return false
}

func newBrowser(t *testing.T) *browser {
	t.Helper()
	exe := chromiumPath(t)
	b := &browser{t: t, responses: map[string]int64{}}
	b.shot = os.Getenv("DTMA_UI_SCREENSHOTS")
	if b.shot == "" {
		b.shot = t.TempDir()
	} else if err := os.MkdirAll(b.shot, 0o755); err != nil {
		t.Fatal(err)
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(exe),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.WindowSize(1280, 900),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("lang", "en-US"),
		// Belt and braces: the browser cannot resolve any name but the
		// loopback address; the assertion below is on what the page asked.
		chromedp.Flag("host-resolver-rules", "MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"),
	)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	b.ctx = ctx
	if err := chromedp.Listen(ctx, b.observe); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	// Times are shown in the viewer's zone: make it one that is never UTC.
	b.run("timezone", chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := chromedp.Call(ctx, emulation.SetTimezoneOverride, emulation.SetTimezoneOverrideParams{TimezoneID: "Asia/Kolkata"})
		return err
	}))
	return b
}

func (b *browser) observe(ev any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch e := ev.(type) {
	case *network.EventRequestWillBeSent:
		b.requests = append(b.requests, e.Request.URL)
	case *network.EventResponseReceived:
		b.responses[e.Response.URL] = e.Response.Status
	case *runtime.EventConsoleAPICalled:
		if e.Type == runtime.ConsoleAPICalledTypeError || e.Type == runtime.ConsoleAPICalledTypeAssert {
			var parts []string
			for _, a := range e.Args {
				parts = append(parts, string(a.Value)+a.Description)
			}
			b.errors = append(b.errors, "console."+string(e.Type)+": "+strings.Join(parts, " "))
		}
	case *runtime.EventExceptionThrown:
		msg := e.ExceptionDetails.Text
		if e.ExceptionDetails.Exception != nil {
			msg += " " + e.ExceptionDetails.Exception.Description
		}
		b.errors = append(b.errors, "exception: "+msg)
	case *cdplog.EventEntryAdded:
		if e.Entry.Level != cdplog.EntryLevelError {
			return
		}
		// Refusals the test provokes (401/403) and loads cut by the agent
		// it kills are expected; any other failed load (a 404 asset, a
		// 500, a connection dropped while the agent runs) is an error.
		if e.Entry.Source == cdplog.EntrySourceNetwork && (strings.Contains(e.Entry.Text, "status of 401") ||
			strings.Contains(e.Entry.Text, "status of 403") || b.cutByKill(e.Entry.Text) ||
			// an instance page's live region asking for the instance the
			// test just removed (the page shows it is gone)
			(strings.Contains(e.Entry.Text, "status of 404") && strings.Contains(e.Entry.URL, "/ui/partials/instances/"))) {
			b.netErrors = append(b.netErrors, e.Entry.URL+": "+e.Entry.Text)
			return
		}
		b.errors = append(b.errors, "log "+string(e.Entry.Source)+": "+e.Entry.Text+" "+e.Entry.URL)
	}
}

// clickJS clicks the element sel matches, waiting (up to the step's cap)
// until there is one. The lookup and the click happen in one evaluation in
// the page: the live regions replace their HTML when it changes (uptimes
// move every second), so a node found by one call and clicked by the next
// may be gone by then.
func clickJS(sel string) chromedp.Action[chromedp.Void] {
	return func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		expr := `(function(){var e=document.querySelector(` + strconv.Quote(sel) + `);if(!e)return false;e.click();return true})()`
		for {
			ok, err := chromedp.Evaluate[bool](expr)(ctx, t)
			if err != nil {
				return chromedp.Void{}, err
			}
			if ok {
				return chromedp.Void{}, nil
			}
			select {
			case <-ctx.Done():
				return chromedp.Void{}, fmt.Errorf("no element matches %s: %w", sel, ctx.Err())
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
}

// run runs one step with a generous cap; a failure fails the test with
// the step's name.
func (b *browser) run(step string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 90*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.t.Fatalf("browser step %q: %v\nconsole errors: %v", step, err, b.consoleErrors())
	}
}

// eval evaluates a JavaScript expression (awaiting a promise).
func evalIn[T any](b *browser, expr string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 90*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		b.t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// waitJS waits (up to 60 s) until expr is truthy in the page.
func (b *browser) waitJS(what, expr string) {
	b.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(b.ctx, 90*time.Second)
		_, err := chromedp.Run(ctx, chromedp.Poll[bool]("!!("+expr+")", chromedp.WithPollingTimeout(time.Until(deadline))))
		cancel()
		if err == nil {
			return
		}
		// A navigation (the page's own, after a removal) ends a poll: poll
		// the new page.
		if strings.Contains(err.Error(), "navigated or closed") && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		text, _ := chromedp.Run(b.ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`))
		b.t.Fatalf("waiting for %s (%s): %v\npage text:\n%s", what, expr, err, text)
	}
}

// screenshot saves the whole page as <dir>/<name>.png.
func (b *browser) screenshot(name string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 90*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Fatalf("screenshot %s: %v", name, err)
	}
	p := filepath.Join(b.shot, name+".png")
	if err := os.WriteFile(p, png, 0o644); err != nil {
		b.t.Fatal(err)
	}
	b.t.Logf("screenshot %s", p)
}

func (b *browser) consoleErrors() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.errors...)
}

func (b *browser) status(u string) int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.responses[u]
}

// checkLocalOnly fails the test if the page asked for anything but
// http://127.0.0.1 (or data:/blob: URLs, which make no request), and if
// any console error or uncaught exception happened.
func (b *browser) checkLocalOnly() {
	b.t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.requests) == 0 {
		b.t.Fatalf("the browser's network log is empty: the listener saw nothing")
	}
	for _, raw := range b.requests {
		u, err := url.Parse(raw)
		if err != nil {
			b.t.Errorf("unparsable request URL %q", raw)
			continue
		}
		if u.Scheme == "data" || u.Scheme == "blob" {
			continue
		}
		if u.Hostname() != "127.0.0.1" {
			b.t.Errorf("the page requested %s, which is not on 127.0.0.1", raw)
		}
	}
	for _, e := range b.errors {
		b.t.Errorf("browser console error: %s", e)
	}
	b.t.Logf("%d requests, all to 127.0.0.1; expected failed loads: %v", len(b.requests), b.netErrors)
}

// uiLogin logs in through the login page.
func (b *browser) login(agentURL string) {
	b.t.Helper()
	b.run("log in",
		chromedp.Navigate(agentURL+"/ui/login"),
		chromedp.WaitVisible(chromedp.CSS("#token")),
		chromedp.SetValue(chromedp.CSS("#token"), Token),
		clickJS("form[action='/ui/login'] button[type=submit]"),
		chromedp.WaitVisible(chromedp.CSS("#live")),
	)
}

func rowStatus(name string) string {
	return fmt.Sprintf(`(document.querySelector('tr[data-name=%q]') || {dataset: {}}).dataset.status`, name)
}

// TestUIDashboard: log in (a wrong token is refused with a clear
// message), see the deployed instances, watch a row change without a
// reload when an instance is stopped behind the page, follow logs and see
// a line the tool prints, start an instance and see the result inline,
// remove one after confirming; a form and a fetch without the CSRF token
// are 403 and change nothing; the cookie opens no API route; every request
// stays on 127.0.0.1 and the console has no error.
func TestUIDashboard(t *testing.T) {
	t.Parallel()
	b := newBrowser(t)
	img := EchoImage(t)
	a := StartAgent(t, AgentOptions{})
	pa, pb := freePort(t), freePort(t)
	a.Expect(201, "POST", "/v1/instances", map[string]any{
		"name": "ui-alpha", "image": img, "account_tool_instance_id": "5d7c0a9e-2f4b-4c3a-9e1d-6b8f0c2a4e11",
		"env":   map[string]string{"ECHO": "alpha", "SECRET_TOKEN": "s3cr3t-value-never-shown"},
		"ports": []map[string]any{{"container_port": 8080, "host_port": pa}},
	})
	a.Expect(201, "POST", "/v1/instances", map[string]any{
		"name": "ui-beta", "image": img, "env": map[string]string{"ECHO": "beta"},
		"ports": []map[string]any{{"container_port": 8080, "host_port": pb}},
	})
	var gamma dtmahttp.Instance
	a.Expect(201, "POST", "/v1/instances", map[string]any{"name": "ui-gamma", "image": img}).Decode(t, &gamma)

	// A wrong token: a clear message, no session.
	b.run("wrong token",
		chromedp.Navigate(a.URL+"/ui/"), // redirected to the login page
		chromedp.WaitVisible(chromedp.CSS("#token")),
		chromedp.SetValue(chromedp.CSS("#token"), "not-the-token"),
		clickJS("form[action='/ui/login'] button[type=submit]"),
		chromedp.WaitVisible(chromedp.CSS("#login-error")),
	)
	if msg := evalIn[string](b, `document.querySelector('#login-error').textContent`); !strings.Contains(msg, "not accepted") {
		t.Fatalf("wrong-token message: %q", msg)
	}
	if st := b.status(a.URL + "/ui/login"); st != http.StatusForbidden {
		t.Errorf("wrong token answered %d, want 403", st)
	}
	b.screenshot("login")

	// The right token: the instances, both running.
	b.login(a.URL)
	b.waitJS("the rows running", rowStatus("ui-alpha")+` === 'running' && `+rowStatus("ui-beta")+` === 'running' && `+rowStatus("ui-gamma")+` === 'running'`)
	if n := evalIn[int](b, `document.querySelectorAll('table.instances tbody tr').length`); n != 3 {
		t.Errorf("%d rows, want 3", n)
	}
	links := evalIn[[]string](b, `[...document.querySelectorAll('tr[data-name="ui-alpha"] a[target]')].map(a => a.href)`)
	if want := fmt.Sprintf("http://127.0.0.1:%d/", pa); len(links) != 1 || links[0] != want {
		t.Errorf("ui-alpha's port links %v, want [%s]", links, want)
	}
	if w := evalIn[int](b, `document.documentElement.scrollWidth`); w > 1280 {
		t.Errorf("the instances page is %d px wide at 1280 px", w)
	}
	// Keyboard: the first Tab reaches the skip link.
	b.run("tab", chromedp.KeyEvent("\t"))
	if cls := evalIn[string](b, `document.activeElement.className`); cls != "skip" {
		t.Errorf("first Tab focuses %q, want the skip link", cls)
	}
	evalIn[bool](b, `(document.activeElement.blur(), true)`)

	// Stopped behind the page's back: the row changes, the page is not
	// reloaded (a marker set on window survives).
	evalIn[bool](b, `window.__dtmaNoReload = true`)
	a.Expect(200, "POST", "/v1/instances/ui-beta/stop", nil)
	b.waitJS("ui-beta's row stopped without reload", rowStatus("ui-beta")+` === 'stopped' && window.__dtmaNoReload === true`)
	// The page is fed by the agent's event stream (its EventSource on
	// /ui/api/events), the 2 s poll being the safety net.
	b.mu.Lock()
	streamed := slices.ContainsFunc(b.requests, func(u string) bool { return strings.HasSuffix(u, "/ui/api/events") })
	b.mu.Unlock()
	if !streamed {
		t.Errorf("the instances page opened no event stream")
	}
	if txt := evalIn[string](b, `document.querySelector('.chip[data-status="stopped"]').textContent`); !strings.Contains(txt, "1") {
		t.Errorf("stopped count chip %q", txt)
	}
	// Stopped behind the agent's back (docker stop): drift shown as text.
	secs := 5
	if _, err := a.Docker.ContainerStop(context.Background(), gamma.ContainerID, client.ContainerStopOptions{Timeout: &secs}); err != nil {
		t.Fatalf("docker stop ui-gamma: %v", err)
	}
	b.waitJS("ui-gamma's drift shown", `(r => r && r.querySelector('.flag.warn') && r.querySelector('.flag.warn').textContent.includes('drift: Docker shows exited, wanted running'))(document.querySelector('tr[data-name="ui-gamma"]'))`)
	b.screenshot("instances")

	// Phone width: no horizontal scrolling.
	b.run("phone", chromedp.EmulateViewport(390, 844))
	b.waitJS("fits 390 px", `document.documentElement.scrollWidth <= 390`)
	b.screenshot("instances-phone")
	b.run("desktop", chromedp.EmulateViewport(1280, 900))

	// Instance page: env names only; follow logs and see a request line.
	b.run("open ui-alpha",
		clickJS(`tr[data-name="ui-alpha"] th a`),
		chromedp.WaitVisible(chromedp.CSS("#logs-form")),
	)
	body := evalIn[string](b, `document.body.innerText`)
	if !strings.Contains(body, "SECRET_TOKEN") || strings.Contains(body, "s3cr3t") {
		t.Errorf("instance page: env names must show, values never:\n%s", body)
	}
	b.run("follow", clickJS("#follow"))
	b.waitJS("follow stream open", `document.querySelector('#logs-status').textContent.startsWith('Following')`)
	probe := "/ui-follow-probe-" + strconv.Itoa(pa)
	deadline := time.Now().Add(60 * time.Second)
	for {
		HTTPGet(pa, probe)
		if evalIn[bool](b, `document.querySelector('#logs').textContent.includes('request GET `+probe+`')`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the followed logs never showed %q:\n%s", probe, evalIn[string](b, `document.querySelector('#logs').textContent`))
		}
		time.Sleep(500 * time.Millisecond)
	}
	if got := evalIn[string](b, `document.querySelector('#inst-status').textContent`); got != "running" {
		t.Errorf("ui-alpha status %q", got)
	}
	b.screenshot("instance")
	b.run("stop following", clickJS("#follow"))

	// Start ui-beta from its page: the result inline, the state live.
	b.run("open ui-beta",
		chromedp.Navigate(a.URL+"/ui/instances/ui-beta"),
		chromedp.WaitVisible(chromedp.CSS(".actions")),
		clickJS(`button[data-action="start"]`),
	)
	b.waitJS("start result", `document.querySelector('#action-result').textContent.includes('instance ui-beta started') && document.querySelector('#inst-status').textContent === 'running'`)
	if r := a.Expect(200, "GET", "/v1/instances/ui-beta", nil).JSON(t); r["docker_status"] != "running" {
		t.Errorf("after Start in the page, Docker shows %v", r["docker_status"])
	}

	// Remove asks first; Cancel removes nothing, Remove removes.
	b.run("remove, cancel",
		clickJS(`button[data-action="remove"]`),
		chromedp.WaitVisible(chromedp.CSS("#confirm-remove")),
	)
	b.screenshot("remove-confirm")
	b.run("cancel", clickJS(`#confirm-remove button[value="cancel"]`), chromedp.WaitNotVisible(chromedp.CSS("#confirm-remove")))
	a.Expect(200, "GET", "/v1/instances/ui-beta", nil)
	b.run("remove, confirm",
		clickJS(`button[data-action="remove"]`),
		chromedp.WaitVisible(chromedp.CSS("#confirm-remove")),
		clickJS("#confirm-remove-yes"),
	)
	b.waitJS("back on the list without ui-beta", `location.pathname === '/ui/' && document.querySelector('tr[data-name="ui-alpha"]') !== null && document.querySelector('tr[data-name="ui-beta"]') === null`)
	if txt := evalIn[string](b, `document.querySelector('.notice.ok').textContent`); !strings.Contains(txt, "ui-beta removed") {
		t.Errorf("removal notice %q", txt)
	}
	a.Expect(404, "GET", "/v1/instances/ui-beta", nil)
	if n := len(a.HostContainers()); n != 2 {
		t.Errorf("%d containers after removing ui-beta, want 2", n)
	}

	// CSRF: a fetch and a form without the token are 403 and change nothing.
	alphaID := evalIn[string](b, `document.querySelector('tr[data-name="ui-alpha"] th a').getAttribute('href').split('/').pop()`)
	if st := evalIn[int](b, `fetch('/ui/api/instances/`+alphaID+`/stop', {method: 'POST'}).then(r => r.status)`); st != 403 {
		t.Errorf("fetch POST without the CSRF header: %d, want 403", st)
	}
	b.run("form without csrf",
		chromedp.Evaluate[chromedp.Void](`(() => { const f = document.createElement('form'); f.method = 'post'; f.action = '/ui/logout'; document.body.appendChild(f); f.submit(); })()`),
		chromedp.WaitVisible(chromedp.CSS("p.notice.bad")),
	)
	if st := b.status(a.URL + "/ui/logout"); st != http.StatusForbidden {
		t.Errorf("form POST /ui/logout without the csrf field: %d, want 403", st)
	}
	cookies, err := chromedp.Call(b.ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{a.URL + "/ui/"}})
	if err != nil {
		t.Fatal(err)
	}
	var session *network.Cookie
	for _, c := range cookies.Cookies {
		if c.Name == "dtma_session" {
			session = c
		}
	}
	if session == nil || !session.HTTPOnly || session.SameSite != network.CookieSameSiteStrict || session.Path != "/ui/" {
		t.Fatalf("session cookie %+v", session)
	}
	withCookie := func(method, path, csrf string) int {
		req, _ := http.NewRequest(method, a.URL+path, nil)
		req.AddCookie(&http.Cookie{Name: session.Name, Value: session.Value})
		if csrf != "" {
			req.Header.Set("X-CSRF-Token", csrf)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if st := withCookie("POST", "/ui/api/instances/ui-alpha/stop", ""); st != 403 {
		t.Errorf("POST stop with the cookie, no CSRF header: %d, want 403", st)
	}
	if st := withCookie("POST", "/ui/api/instances/ui-alpha/stop", "forged"); st != 403 {
		t.Errorf("POST stop with a forged CSRF header: %d, want 403", st)
	}
	for _, p := range []string{"/v1/instances", "/tools/status"} {
		if st := withCookie("GET", p, ""); st != 401 {
			t.Errorf("GET %s with only the dashboard cookie: %d, want 401", p, st)
		}
	}
	if r := a.Expect(200, "GET", "/v1/instances/ui-alpha", nil).JSON(t); r["docker_status"] != "running" || r["desired_state"] != "running" {
		t.Errorf("refused POSTs changed ui-alpha: %v / %v", r["docker_status"], r["desired_state"])
	}

	// Host page: version, host id, registry and Docker, times local.
	b.run("host", chromedp.Navigate(a.URL+"/ui/host"), chromedp.WaitVisible(chromedp.CSS("#agent-h")))
	host := evalIn[string](b, `document.querySelector('#live').innerText`)
	for _, want := range []string{a.HostID, "sqlite", "reachable", "Engine", "Memory", "shared PostgreSQL registry"} {
		if !strings.Contains(host, want) {
			t.Errorf("host page lacks %q:\n%s", want, host)
		}
	}
	b.waitJS("a reconcile time shown in local time with UTC on hover",
		`(t => t && !t.textContent.includes('UTC') && t.title.endsWith(' UTC'))(document.querySelector('#live time'))`)
	b.screenshot("host")

	// Log out with the button: the session is gone.
	b.run("logout",
		clickJS(".logout button"),
		chromedp.WaitVisible(chromedp.CSS("#token")),
		chromedp.Navigate(a.URL+"/ui/"),
		chromedp.WaitVisible(chromedp.CSS("#token")),
	)
	if st := withCookie("GET", "/ui/partials/instances", ""); st != 401 {
		t.Errorf("the logged-out session still reads: %d", st)
	}

	b.checkLocalOnly()
}

// TestUIHostFleet: with a shared PostgreSQL registry the host page lists
// the instances of every host. When the agent dies the page says it cannot
// reach it; when the agent restarts, the old session is void (new process,
// new key) and the page says to log in again.
func TestUIHostFleet(t *testing.T) {
	t.Parallel()
	b := newBrowser(t)
	img := EchoImage(t)
	dsn := pgDatabase(t)
	a := StartAgent(t, AgentOptions{RegistryURL: dsn})
	other := StartAgent(t, AgentOptions{RegistryURL: dsn})
	a.pgDeploy(map[string]any{"name": "fleet-ui-a", "image": img, "ports": []map[string]any{{"container_port": 8080}}})
	other.pgDeploy(map[string]any{"name": "fleet-ui-b", "image": img})

	b.login(a.URL)
	b.run("host", chromedp.Navigate(a.URL+"/ui/host"), chromedp.WaitVisible(chromedp.CSS("#fleet-h")))
	b.waitJS("both hosts' instances", fmt.Sprintf(
		`document.querySelector('tr[data-name="fleet-ui-a"][data-host=%q]') !== null && document.querySelector('tr[data-name="fleet-ui-b"][data-host=%q]') !== null`,
		a.HostID, other.HostID))
	host := evalIn[string](b, `document.querySelector('#live').innerText`)
	if !strings.Contains(host, "postgres") || !strings.Contains(host, "2 instances on 2 hosts") {
		t.Errorf("host page:\n%s", host)
	}
	// Only this host's instance links to a page here.
	if n := evalIn[int](b, `document.querySelectorAll('table.fleet tbody th a').length`); n != 1 {
		t.Errorf("%d fleet rows link to an instance page, want 1 (this host's)", n)
	}
	b.screenshot("host-fleet")

	// The agent goes away: the page says so and keeps trying. It comes back
	// as a new process: the session (signed with that process's key) has
	// ended, and the page says to log in again.
	b.expectAgentDown()
	a.Kill()
	b.waitJS("the unreachable banner", `(el => !el.hidden && el.textContent.includes('Cannot reach the agent'))(document.getElementById('banner'))`)
	a.Restart()
	b.waitJS("the session-ended banner", `(el => !el.hidden && el.textContent.includes('Your session has ended') && el.querySelector('a[href="/ui/login"]'))(document.getElementById('banner'))`)
	b.checkLocalOnly()
}
