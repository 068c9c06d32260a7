package http

import (
	"context"
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/agentopia/dtma"
)

// uiService is fakeService plus the lifecycle calls the dashboard makes;
// it records the stops it was asked for.
type uiService struct {
	fakeService
	stops []string
}

func (f *uiService) FindInstance(_ context.Context, ref string) (*dtma.Instance, error) {
	for _, inst := range f.list {
		if inst.ID == ref || inst.Name == ref {
			return inst, nil
		}
	}
	return nil, dtma.Errorf(dtma.ENOTFOUND, "no instance %q", ref)
}

func (f *uiService) StopInstance(ctx context.Context, ref string, _ time.Duration) (*dtma.Instance, bool, error) {
	inst, err := f.FindInstance(ctx, ref)
	if err != nil {
		return nil, false, err
	}
	f.stops = append(f.stops, ref)
	return inst, true, nil
}

func newUITestServer(limit int) (*Server, *uiService, http.Handler) {
	svc := &uiService{fakeService: fakeService{list: []*dtma.Instance{{
		ID: "11111111-1111-4111-8111-111111111111", HostID: "h1", Name: "weather tool",
		Spec:         dtma.Spec{Image: "echo:1", Env: map[string]string{"API_KEY": "hunter2-secret-value"}},
		DesiredState: dtma.DesiredRunning, Status: dtma.StatusError, LastError: "start failed: port taken",
		Observed: dtma.Observed{DockerStatus: dtma.DockerExited},
	}}}}
	s := &Server{Service: svc, Tokens: []string{"right-token"}, AuthFailureLimit: limit}
	return s, svc, s.Handler()
}

func uiDo(h http.Handler, method, path string, body url.Values, mod func(*http.Request)) *httptest.ResponseRecorder {
	var req *http.Request
	if body != nil {
		req = httptest.NewRequest(method, path, strings.NewReader(body.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	} else {
		req = httptest.NewRequest(method, path, nil)
	}
	if mod != nil {
		mod(req)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// uiLogin logs in with the right token and returns the session cookie.
func uiLogin(t *testing.T, h http.Handler) *http.Cookie {
	t.Helper()
	rec := uiDo(h, "POST", "/ui/login", url.Values{"token": {"right-token"}}, nil)
	if rec.Code != http.StatusSeeOther || rec.Header().Get("Location") != "/ui/" {
		t.Fatalf("login: %d %v\n%s", rec.Code, rec.Header(), rec.Body)
	}
	for _, c := range rec.Result().Cookies() {
		if c.Name == uiSessionCookie {
			return c
		}
	}
	t.Fatalf("login set no session cookie: %v", rec.Header())
	return nil
}

func withCookie(c *http.Cookie) func(*http.Request) { return func(r *http.Request) { r.AddCookie(c) } }

func TestUISessionSignVerify(t *testing.T) {
	salt := []byte("0123456789abcdef0123456789abcdef")
	k := newSessionKeeper([]string{"a", "b"}, salt, time.Hour)
	now := time.Unix(1_800_000_000, 0)
	k.now = func() time.Time { return now }
	sess, value := k.issue()
	got, err := k.verify(value)
	if err != nil || got.id != sess.id || got.csrf != sess.csrf || sess.csrf == "" {
		t.Fatalf("verify(fresh) = %+v, %v", got, err)
	}
	// The same tokens in another order and the same salt: same key.
	if _, err := newSessionKeeper([]string{"b", "a"}, salt, time.Hour).verify(value); err != nil {
		t.Errorf("same tokens, same salt: %v", err)
	}
	for name, other := range map[string]*sessionKeeper{
		"another process (salt)": newSessionKeeper([]string{"a", "b"}, nil, time.Hour),
		"a new token":            newSessionKeeper([]string{"a", "c"}, salt, time.Hour),
		"a token removed":        newSessionKeeper([]string{"a"}, salt, time.Hour),
	} {
		if _, err := other.verify(value); err == nil {
			t.Errorf("%s still accepts the session", name)
		}
	}
	p, sig, _ := strings.Cut(value, ".")
	flip := func(s string) string {
		b := []byte(s)
		if b[3] == 'A' {
			b[3] = 'B'
		} else {
			b[3] = 'A'
		}
		return string(b)
	}
	for _, bad := range []string{"", ".", p, p + ".", flip(p) + "." + sig, p + "." + flip(sig), value + "x", strings.Repeat("A", 300)} {
		if _, err := k.verify(bad); err == nil {
			t.Errorf("verify(%q) accepted", bad)
		}
	}
	// Expiry.
	now = now.Add(time.Hour - time.Second)
	if _, err := k.verify(value); err != nil {
		t.Errorf("a second before expiry: %v", err)
	}
	now = now.Add(time.Second)
	if _, err := k.verify(value); err == nil {
		t.Errorf("expired session accepted")
	}
	// Revocation (logout).
	now = time.Unix(1_800_000_000, 0)
	s2, v2 := k.issue()
	k.revoke(s2)
	if _, err := k.verify(v2); err == nil {
		t.Errorf("revoked session accepted")
	}
	if _, err := k.verify(value); err != nil {
		t.Errorf("revoking one session ended another: %v", err)
	}
	// CSRF: only the session's own token.
	if !sess.checkCSRF(sess.csrf) || sess.checkCSRF("") || sess.checkCSRF(s2.csrf) {
		t.Errorf("checkCSRF accepts the wrong tokens")
	}
}

// TestUISessionRevokedBounded: a full revocation list never lets a
// logged-out session back in; it re-keys, ending every session.
func TestUISessionRevokedBounded(t *testing.T) {
	k := newSessionKeeper([]string{"a"}, nil, time.Hour)
	k.maxRevoked = 3
	var values []string
	for i := 0; i < 4; i++ {
		s, v := k.issue()
		values = append(values, v)
		k.revoke(s)
	}
	for i, v := range values {
		if _, err := k.verify(v); err == nil {
			t.Errorf("logged-out session %d accepted again", i)
		}
	}
	if len(k.revoked) > 3 {
		t.Errorf("%d revoked sessions remembered, cap 3", len(k.revoked))
	}
}

func TestUILoginCookie(t *testing.T) {
	_, _, h := newUITestServer(-1)
	c := uiLogin(t, h)
	if !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/ui/" || c.Secure {
		t.Errorf("cookie over plain HTTP: %+v", c)
	}
	if d := time.Until(c.Expires); d < 11*time.Hour || d > 13*time.Hour {
		t.Errorf("cookie expires in %s, want ~12h", d)
	}
	rec := uiDo(h, "POST", "/ui/login", url.Values{"token": {"Bearer right-token"}}, func(r *http.Request) { r.TLS = &tls.ConnectionState{} })
	if sc := rec.Header().Get("Set-Cookie"); !strings.Contains(sc, "; Secure") {
		t.Errorf("cookie over TLS is not Secure: %s", sc)
	}
	if rec := uiDo(h, "GET", "/ui/", nil, withCookie(c)); rec.Code != 200 || !strings.Contains(rec.Body.String(), "weather tool") {
		t.Errorf("instances page with the session: %d\n%s", rec.Code, rec.Body)
	}
	if rec := uiDo(h, "GET", "/ui/", nil, nil); rec.Code != http.StatusSeeOther || rec.Header().Get("Location") != "/ui/login" {
		t.Errorf("instances page without a session: %d %s", rec.Code, rec.Header().Get("Location"))
	}
	if rec := uiDo(h, "GET", "/ui/partials/instances", nil, nil); rec.Code != http.StatusUnauthorized || !strings.Contains(rec.Body.String(), `"unauthorized"`) {
		t.Errorf("partial without a session: %d %s", rec.Code, rec.Body)
	}
	// The API never takes the cookie.
	for _, p := range []string{"/v1/instances", "/tools/status", "/metrics"} {
		if rec := uiDo(h, "GET", p, nil, withCookie(c)); rec.Code != http.StatusUnauthorized {
			t.Errorf("%s with only the session cookie: %d, want 401", p, rec.Code)
		}
	}
}

func TestUILoginWrongTokenLimited(t *testing.T) {
	_, _, h := newUITestServer(2)
	for i := 0; i < 2; i++ {
		rec := uiDo(h, "POST", "/ui/login", url.Values{"token": {"wrong-token"}}, nil)
		if rec.Code != http.StatusForbidden || !strings.Contains(rec.Body.String(), "That token is not accepted") || rec.Header().Get("Set-Cookie") != "" {
			t.Fatalf("wrong token %d: %d %v\n%s", i, rec.Code, rec.Header(), rec.Body)
		}
		if strings.Contains(rec.Body.String(), "wrong-token") {
			t.Errorf("the login page echoes the token")
		}
	}
	rec := uiDo(h, "POST", "/ui/login", url.Values{"token": {"right-token"}}, nil)
	if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") == "" || rec.Header().Get("Set-Cookie") != "" ||
		!strings.Contains(rec.Body.String(), "Too many failed attempts") {
		t.Fatalf("after the limit: %d %v\n%s", rec.Code, rec.Header(), rec.Body)
	}
	// The same limiter guards the API: the address is limited there too.
	if rec := uiDo(h, "GET", "/v1/instances", nil, func(r *http.Request) { r.Header.Set("Authorization", "Bearer right-token") }); rec.Code != http.StatusTooManyRequests {
		t.Errorf("API after failed dashboard logins: %d, want 429", rec.Code)
	}
}

func TestUICSRF(t *testing.T) {
	_, svc, h := newUITestServer(-1)
	c := uiLogin(t, h)
	page := uiDo(h, "GET", "/ui/", nil, withCookie(c)).Body.String()
	_, rest, _ := strings.Cut(page, `name="csrf-token" content="`)
	csrf, _, _ := strings.Cut(rest, `"`)
	if csrf == "" {
		t.Fatalf("no CSRF token in the page:\n%s", page)
	}
	stop := "/ui/api/instances/weather%20tool/stop"
	for name, mod := range map[string]func(*http.Request){
		"no token":     func(r *http.Request) {},
		"wrong token":  func(r *http.Request) { r.Header.Set(uiCSRFHeader, csrf+"x") },
		"other origin": func(r *http.Request) { r.Header.Set(uiCSRFHeader, csrf); r.Header.Set("Origin", "http://evil.example") },
	} {
		rec := uiDo(h, "POST", stop, nil, func(r *http.Request) { r.AddCookie(c); mod(r) })
		if rec.Code != http.StatusForbidden || !strings.Contains(rec.Body.String(), `"field":"X-CSRF-Token"`) {
			t.Errorf("%s: %d %s", name, rec.Code, rec.Body)
		}
	}
	if len(svc.stops) != 0 {
		t.Fatalf("a refused POST stopped %v", svc.stops)
	}
	rec := uiDo(h, "POST", stop, nil, func(r *http.Request) {
		r.AddCookie(c)
		r.Header.Set(uiCSRFHeader, csrf)
		r.Header.Set("Origin", "http://example.com") // httptest's host
	})
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), `"message":"instance weather tool stopped"`) || len(svc.stops) != 1 {
		t.Fatalf("stop with the token: %d %s (stops %v)", rec.Code, rec.Body, svc.stops)
	}
	if rec := uiDo(h, "POST", "/ui/api/instances/weather%20tool/explode", nil, func(r *http.Request) { r.AddCookie(c); r.Header.Set(uiCSRFHeader, csrf) }); rec.Code != 400 || !strings.Contains(rec.Body.String(), `"field":"action"`) {
		t.Errorf("unknown action: %d %s", rec.Code, rec.Body)
	}
	// Logout is a form: without the csrf field 403, with it the session ends.
	if rec := uiDo(h, "POST", "/ui/logout", url.Values{}, withCookie(c)); rec.Code != http.StatusForbidden {
		t.Errorf("logout without CSRF: %d", rec.Code)
	}
	if rec := uiDo(h, "POST", "/ui/logout", url.Values{"csrf": {csrf}}, withCookie(c)); rec.Code != http.StatusSeeOther {
		t.Fatalf("logout: %d %s", rec.Code, rec.Body)
	}
	if rec := uiDo(h, "GET", "/ui/partials/instances", nil, withCookie(c)); rec.Code != http.StatusUnauthorized {
		t.Errorf("session after logout: %d, want 401", rec.Code)
	}
}

// TestUIPagesShowNoSecrets: the instance page lists env names, never
// values, and makes the last error visible as text.
func TestUIPagesShowNoSecrets(t *testing.T) {
	_, _, h := newUITestServer(-1)
	c := uiLogin(t, h)
	for _, p := range []string{"/ui/", "/ui/instances/weather%20tool", "/ui/partials/instances/11111111-1111-4111-8111-111111111111", "/ui/host"} {
		rec := uiDo(h, "GET", p, nil, withCookie(c))
		body := rec.Body.String()
		if rec.Code != 200 {
			t.Errorf("%s: %d\n%s", p, rec.Code, body)
		}
		if strings.Contains(body, "hunter2") || strings.Contains(body, "right-token") {
			t.Errorf("%s shows a secret", p)
		}
		if rec.Header().Get("Content-Security-Policy") == "" || rec.Header().Get("X-Frame-Options") != "DENY" {
			t.Errorf("%s: security headers missing: %v", p, rec.Header())
		}
	}
	inst := uiDo(h, "GET", "/ui/instances/weather%20tool", nil, withCookie(c)).Body.String()
	for _, want := range []string{"API_KEY", "start failed: port taken", "drift: Docker shows exited, wanted running"} {
		if !strings.Contains(inst, want) {
			t.Errorf("instance page lacks %q", want)
		}
	}
	if rec := uiDo(h, "GET", "/ui/instances/nope", nil, withCookie(c)); rec.Code != 404 {
		t.Errorf("unknown instance page: %d", rec.Code)
	}
	if rec := uiDo(h, "GET", "/ui/static/app.js", nil, nil); rec.Code != 200 || !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/javascript") {
		t.Errorf("app.js: %d %s", rec.Code, rec.Header().Get("Content-Type"))
	}
	if rec := uiDo(h, "GET", "/ui/?status=running", nil, withCookie(c)); !strings.Contains(rec.Body.String(), "No instance is <b>running</b>") {
		t.Errorf("filtered empty state missing:\n%s", rec.Body)
	}
}

func TestUIDisabled(t *testing.T) {
	s := &Server{Service: &uiService{}, Tokens: []string{"right-token"}, AuthFailureLimit: -1, UI: UIConfig{Disabled: true}}
	h := s.Handler()
	if rec := uiDo(h, "GET", "/ui/login", nil, nil); rec.Code != http.StatusUnauthorized {
		t.Errorf("disabled dashboard, no token: %d, want 401", rec.Code)
	}
	if rec := uiDo(h, "GET", "/ui/login", nil, func(r *http.Request) { r.Header.Set("Authorization", "Bearer right-token") }); rec.Code != http.StatusNotFound {
		t.Errorf("disabled dashboard, with token: %d, want 404", rec.Code)
	}
}

// TestUIInstancesSortFilter: ?status= filters, ?sort= orders (a leading
// "-" descends), the counts cover every instance, and the live partial
// keeps the same query.
func TestUIInstancesSortFilter(t *testing.T) {
	mk := func(name string, st dtma.Status, restarts int) *dtma.Instance {
		return &dtma.Instance{ID: "id-" + name, Name: name, Status: st, DesiredState: dtma.DesiredRunning,
			Observed: dtma.Observed{DockerStatus: dtma.DockerRunning, RestartCount: restarts}}
	}
	svc := &uiService{fakeService: fakeService{list: []*dtma.Instance{
		mk("b", dtma.StatusRunning, 5), mk("a", dtma.StatusRunning, 1), mk("c", dtma.StatusCrashLoop, 9),
	}}}
	h := (&Server{Service: svc, Tokens: []string{"right-token"}, AuthFailureLimit: -1}).Handler()
	c := uiLogin(t, h)
	order := func(path string) string {
		body := uiDo(h, "GET", path, nil, withCookie(c)).Body.String()
		var names []string
		for _, part := range strings.Split(body, `<tr data-name="`)[1:] {
			n, _, _ := strings.Cut(part, `"`)
			names = append(names, n)
		}
		return strings.Join(names, ",")
	}
	for path, want := range map[string]string{
		"/ui/":                              "a,b,c",
		"/ui/?sort=-name":                   "c,b,a",
		"/ui/?sort=restarts":                "a,b,c",
		"/ui/?sort=-restarts":               "c,b,a",
		"/ui/?status=running":               "a,b",
		"/ui/?status=crashloop":             "c",
		"/ui/partials/instances?sort=-name": "c,b,a",
		"/ui/?sort=nonsense":                "a,b,c",
	} {
		if got := order(path); got != want {
			t.Errorf("%s: rows %s, want %s", path, got, want)
		}
	}
	body := uiDo(h, "GET", "/ui/?status=running&sort=-name", nil, withCookie(c)).Body.String()
	for _, want := range []string{`all <b>3</b>`, `running <b>2</b>`, `crashloop <b>1</b>`, `data-live="/ui/partials/instances?sort=-name&amp;status=running"`, `aria-sort="descending"`} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %s", want)
		}
	}
}
