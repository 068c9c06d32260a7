package http

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestTruncate(t *testing.T) {
	if got := truncate("/tools/x"); got != "/tools/x" {
		t.Errorf("short string changed: %q", got)
	}
	long := strings.Repeat("é", 1000) // 2000 bytes, cut inside a rune at 256
	got := truncate(long)
	if len(got) > maxLogString+40 || !utf8.ValidString(got) || !strings.Contains(got, "[truncated, 2000 bytes]") {
		t.Errorf("truncate(2000 bytes) = %q (%d bytes)", got, len(got))
	}
}

// metricSeries returns the dtma_http_requests_total lines of /metrics.
func metricSeries(t *testing.T, h http.Handler) []string {
	t.Helper()
	req := httptest.NewRequest("GET", "/metrics", nil)
	req.Header.Set("Authorization", "Bearer tok")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != 200 {
		t.Fatalf("/metrics: %d %s", rec.Code, rec.Body)
	}
	var out []string
	for _, line := range strings.Split(rec.Body.String(), "\n") {
		if strings.HasPrefix(line, "dtma_http_requests_total{") {
			out = append(out, line)
		}
	}
	return out
}

// TestMetricsLabelsBounded: unauthenticated requests with invented
// methods and paths, and paths the mux redirects, add no series: they are
// counted under method "other" and route "unmatched".
func TestMetricsLabelsBounded(t *testing.T) {
	s := &Server{Service: &fakeService{}, Tokens: []string{"tok"}, AuthFailureLimit: -1}
	h := s.Handler()
	send := func(method, path string) {
		req := httptest.NewRequest("GET", "/", nil)
		req.Method, req.URL.Path, req.RequestURI = method, path, path
		h.ServeHTTP(httptest.NewRecorder(), req)
	}
	round := func(i int) {
		n := strconv.Itoa(i)
		send("M"+strings.Repeat("X", 1000)+n, "/tools")
		send("GET", "/random/"+n)
		send("GET", "//redirect/"+n) // the mux redirects before any handler
		send("PUT", "/v1/instances")
	}
	metricSeries(t, h) // its own series is there from now on
	round(0)
	base := metricSeries(t, h)
	for i := 1; i < 200; i++ {
		round(i)
	}
	after := metricSeries(t, h)
	if len(after) != len(base) {
		t.Errorf("%d series after one round of odd requests, %d after 200:\n%s", len(base), len(after), strings.Join(after, "\n"))
	}
	joined := strings.Join(after, "\n")
	for _, bad := range []string{"XXXX", "/random/", "redirect"} {
		if strings.Contains(joined, bad) {
			t.Errorf("a request's own string %q became a label:\n%s", bad, joined)
		}
	}
	for _, want := range []string{`{code="401",method="other",route="unmatched"} 200`, `{code="401",method="GET",route="unmatched"} 200`} {
		if !strings.Contains(joined, want) {
			t.Errorf("metrics lack %s:\n%s", want, joined)
		}
	}
}

// serveOn runs s on a loopback listener until the test ends and returns
// its address.
func serveOn(t *testing.T, s *Server) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.ListenAndServe(ctx, l) }()
	t.Cleanup(func() { cancel(); <-done })
	return l.Addr().String()
}

// TestRefusalClosesWithoutReadingBody: a request announcing a body it
// never sends is answered 401/403/429 at once, with Connection: close, and
// the connection closed — long before the read timeout (an hour here); a
// token holder's slow body is cut by the read timeout (400) and the
// connection closed.
func TestRefusalClosesWithoutReadingBody(t *testing.T) {
	patient := serveOn(t, &Server{Service: &fakeService{}, Tokens: []string{"tok"}, ReadTimeout: time.Hour, AuthFailureLimit: 2})
	quick := serveOn(t, &Server{Service: &fakeService{}, Tokens: []string{"tok"}, ReadTimeout: 500 * time.Millisecond, AuthFailureLimit: -1})
	for _, tc := range []struct {
		addr, auth string
		status     int
	}{
		{patient, "", 401},
		{patient, "Authorization: Bearer wrong\r\n", 403},
		{patient, "Authorization: Bearer tok\r\n", 429}, // two failures above: limited
		{quick, "Authorization: Bearer tok\r\n", 400},
	} {
		c, err := net.Dial("tcp", tc.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(30 * time.Second)) // a generous cap, far below the patient server's read timeout
		_, _ = io.WriteString(c, "POST /v1/instances HTTP/1.1\r\nHost: x\r\n"+tc.auth+"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%d case: no answer: %v", tc.status, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status || !resp.Close {
			t.Errorf("status %d (want %d), Connection close %v", resp.StatusCode, tc.status, resp.Close)
		}
		if n, err := br.Read(make([]byte, 1)); err == nil {
			t.Errorf("%d case: connection still open after the answer (read %d bytes)", tc.status, n)
		} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Errorf("%d case: connection not closed by the server", tc.status)
		}
	}
}

// TestLimitListener: a third connection is accepted only once one of two
// closes.
func TestLimitListener(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := LimitListener(inner, 2)
	defer l.Close()
	accepted := make(chan net.Conn, 3)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	for i := 0; i < 3; i++ {
		c, err := net.Dial("tcp", inner.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	first, second := <-accepted, <-accepted
	select {
	case <-accepted:
		t.Fatal("a third connection was accepted while two were open")
	case <-time.After(200 * time.Millisecond): // nothing should happen; a late accept fails below
	}
	first.Close()
	first.Close() // a second Close gives back nothing more
	third := <-accepted
	if third == nil {
		t.Fatal("listener closed")
	}
	second.Close()
	third.Close()
	l.Close()
	for range accepted {
	}
}

// TestMethodNotAllowed: a known path with another method is a 405 with
// Allow and the face's JSON body, after authentication; an unknown path
// stays a 404; without a token both are 401.
func TestMethodNotAllowed(t *testing.T) {
	s := &Server{Service: &fakeService{}, Tokens: []string{"tok"}, AuthFailureLimit: -1}
	h := s.Handler()
	do := func(method, path, token string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(method, path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	for _, tc := range []struct{ method, path, allow, body string }{
		{"PUT", "/v1/instances", "GET, HEAD, POST", `"code":"method_not_allowed"`},
		{"POST", "/v1/instances/x", "DELETE, GET, HEAD", `"code":"method_not_allowed"`},
		{"GET", "/v1/instances/x/start", "POST", `"code":"method_not_allowed"`},
		{"GET", "/tools", "POST", `"success":false`},
		{"PATCH", "/tools/x", "DELETE", `"error":"method_not_allowed"`},
		{"POST", "/health", "GET, HEAD", `"success":false`},
	} {
		rec := do(tc.method, tc.path, "tok")
		if rec.Code != 405 || rec.Header().Get("Allow") != tc.allow || !strings.Contains(rec.Body.String(), tc.body) {
			t.Errorf("%s %s: %d Allow %q %s", tc.method, tc.path, rec.Code, rec.Header().Get("Allow"), rec.Body)
		}
		if rec := do(tc.method, tc.path, ""); rec.Code != 401 || rec.Header().Get("Allow") != "" {
			t.Errorf("%s %s without a token: %d Allow %q", tc.method, tc.path, rec.Code, rec.Header().Get("Allow"))
		}
	}
	if rec := do("GET", "/v1/nothing", "tok"); rec.Code != 404 || rec.Header().Get("Allow") != "" {
		t.Errorf("unknown path: %d Allow %q", rec.Code, rec.Header().Get("Allow"))
	}
	if rec := do("GET", "/v1/instances/x", "tok"); rec.Code != 404 || !strings.Contains(rec.Body.String(), `"not_found"`) {
		t.Errorf("known route: %d %s", rec.Code, rec.Body) // the fake finds nothing
	}
}
