package http

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestSourceOf(t *testing.T) {
	for addr, want := range map[string]string{
		"203.0.113.7:4711":               "203.0.113.7/32",
		"[::ffff:203.0.113.7]:1":         "203.0.113.7/32",
		"[2001:db8:1:2:3:4:5:6]:80":      "2001:db8:1:2::/64",
		"[fe80::1%eth0]:80":              "fe80::/64",
		"2001:db8:1:2:aaaa:bbbb:cccc:dd": "2001:db8:1:2::/64",
	} {
		got, ok := sourceOf(addr)
		if !ok || got.String() != want {
			t.Errorf("sourceOf(%q) = %v %v, want %s", addr, got, ok, want)
		}
	}
	if _, ok := sourceOf("@"); ok {
		t.Error("a non-IP remote address was given a source")
	}
}

// TestAuthLimiterWindow: the limit-th failure blocks the source until the
// window ends; other sources are unaffected; one warning per burst.
func TestAuthLimiterWindow(t *testing.T) {
	var logs bytes.Buffer
	l := newAuthLimiter(3, slog.New(slog.NewTextHandler(&logs, nil)))
	now := time.Unix(1000, 0)
	l.now = func() time.Time { return now }
	a, b := netip.MustParsePrefix("192.0.2.1/32"), netip.MustParsePrefix("192.0.2.2/32")
	for i := 0; i < 3; i++ {
		if _, blocked := l.blocked(a); blocked {
			t.Fatalf("blocked after %d failures", i)
		}
		l.fail(a)
	}
	now = now.Add(20 * time.Second)
	if wait, blocked := l.blocked(a); !blocked || wait != 40*time.Second {
		t.Errorf("after 3 failures: blocked %v, wait %s", blocked, wait)
	}
	if _, blocked := l.blocked(b); blocked {
		t.Error("another source is blocked")
	}
	l.fail(a) // a failure seen while blocked (a race) logs nothing more
	if n := strings.Count(logs.String(), "rate limited"); n != 1 {
		t.Errorf("%d warnings, want 1:\n%s", n, logs.String())
	}
	now = now.Add(41 * time.Second)
	if _, blocked := l.blocked(a); blocked {
		t.Error("still blocked after the window")
	}
}

// TestAuthLimiterBounded: failures from 20 000 addresses keep at most
// maxSources entries, and a source at the limit stays blocked while newer
// sources come and go only if it is not the oldest.
func TestAuthLimiterBounded(t *testing.T) {
	l := newAuthLimiter(2, slog.New(slog.DiscardHandler))
	now := time.Unix(1000, 0)
	l.now = func() time.Time { return now }
	for i := 0; i < 20000; i++ {
		ip := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		l.fail(netip.PrefixFrom(ip, 32))
		now = now.Add(time.Millisecond)
	}
	if n := l.len(); n > l.maxSources {
		t.Fatalf("%d sources remembered, cap %d", n, l.maxSources)
	}
	now = now.Add(time.Hour)
	l.fail(netip.MustParsePrefix("192.0.2.9/32"))
	if n := l.len(); n != 1 {
		t.Errorf("%d sources after every window expired, want 1", n)
	}
}

// TestHandlerRateLimited: after the limit a source gets 429 with
// Retry-After and a JSON body, also with the right token (it is not
// checked); another address still authenticates.
func TestHandlerRateLimited(t *testing.T) {
	var logs bytes.Buffer
	s := &Server{Service: &fakeService{}, Tokens: []string{"tok"}, AuthFailureLimit: 5, Logger: slog.New(slog.NewJSONHandler(&logs, nil))}
	h := s.Handler()
	do := func(path, remote, token string) *httptest.ResponseRecorder {
		req := httptest.NewRequest("GET", path, nil)
		req.RemoteAddr = remote
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	for i := 0; i < 5; i++ {
		if rec := do("/v1/instances", "198.51.100.1:1", "wrong"+strconv.Itoa(i)); rec.Code != 403 {
			t.Fatalf("failure %d: %d", i, rec.Code)
		}
	}
	for _, tc := range []struct{ path, token, want string }{
		{"/v1/instances", "tok", `"code":"rate_limited"`},
		{"/v1/instances", "", `"code":"rate_limited"`},
		{"/tools/status", "wrong", `"error":"rate_limited"`},
	} {
		rec := do(tc.path, "198.51.100.1:2", tc.token)
		ra, _ := strconv.Atoi(rec.Header().Get("Retry-After"))
		if rec.Code != 429 || ra < 1 || ra > 60 || rec.Header().Get("Connection") != "close" || !strings.Contains(rec.Body.String(), tc.want) || !json.Valid(rec.Body.Bytes()) {
			t.Errorf("%s token %q: %d Retry-After %q %s", tc.path, tc.token, rec.Code, rec.Header().Get("Retry-After"), rec.Body)
		}
	}
	if rec := do("/health", "198.51.100.1:3", ""); rec.Code != 200 {
		t.Errorf("/health while limited: %d", rec.Code)
	}
	if rec := do("/v1/instances", "198.51.100.2:1", "tok"); rec.Code != 200 {
		t.Errorf("another address: %d %s", rec.Code, rec.Body)
	}
	if n := strings.Count(logs.String(), "failed authentications rate limited"); n != 1 {
		t.Errorf("%d limiter warnings, want 1", n)
	}
	if n := strings.Count(logs.String(), `"status":429`); n != 0 {
		t.Errorf("429s logged per request (%d lines)", n)
	}
}

// len returns how many sources are remembered.
func (l *authLimiter) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.sources)
}
