// Package http serves DTMA's two API faces over one dtma.InstanceService:
// the legacy routes the platform's backend already calls (/tools, /status,
// /health) and the v1 API (/v1/...). Every route but GET /health needs the
// bearer token.
package http

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"encoding/json"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/agentopia/dtma"
	"github.com/prometheus/client_golang/prometheus"
)

// Server is the HTTP face of the agent.
type Server struct {
	Service dtma.InstanceService
	Metrics dtma.SystemMetricsSource // for /status; nil reports zeros
	Version string
	Logger  *slog.Logger

	// Tokens are the accepted bearer tokens (DTMA_BEARER_TOKEN,
	// BACKEND_TO_DTMA_API_KEY). At least one is required.
	Tokens []string
	// PublicStatus serves GET /status without a token (the legacy
	// behaviour some backend functions rely on).
	PublicStatus bool
	// LegacyPortConflict is what POST /tools does with a requested host
	// port it cannot have (DTMA_LEGACY_PORT_CONFLICT); "" means
	// dtma.PortConflictRemap. The v1 API always rejects.
	LegacyPortConflict dtma.PortConflictPolicy
	// Environment is GET /status's environment object, which the
	// backend's operator console reads without a guard.
	Environment LegacyEnvironment
	// Adopt says who may call POST /v1/adopt ("" means AdoptLoopback).
	Adopt AdoptPolicy

	// ReadTimeout bounds reading a request's headers and body
	// (DefaultReadTimeout when zero); the header part is also bounded by
	// DefaultReadHeaderTimeout. IdleTimeout closes idle keep-alive
	// connections (DefaultIdleTimeout when zero).
	ReadTimeout, IdleTimeout time.Duration
	// MaxConns caps the connections served at once (DefaultMaxConns when
	// zero).
	MaxConns int
	// AuthFailureLimit is how many failed authentications a source address
	// may make per minute before it is answered 429 without a token check
	// (DefaultAuthFailureLimit when zero; negative turns the limit off).
	AuthFailureLimit int
	// TLSConfig, when set, serves HTTPS (HTTP/1.1 only) on the listener;
	// it must carry a certificate or GetCertificate (see CertReloader).
	TLSConfig *tls.Config
	// UI configures the web dashboard at /ui/ (ui.go).
	UI UIConfig

	// Prometheus is the registry GET /metrics exposes; the server adds
	// its HTTP series and the service's state to it. nil: a private one.
	Prometheus *prometheus.Registry

	// Events is the instance event hub GET /v1/events serves; nil answers
	// 503.
	Events *EventHub

	srv         *http.Server
	metrics     *httpMetrics
	streamsOnce sync.Once
	streams     context.Context
	stopStreams context.CancelFunc
	patterns    map[string]bool // the registered "METHOD /path" patterns
	methods     []string        // the methods they use, HEAD with GET, sorted
	limiter     *authLimiter    // nil when the limit is off
	rowCache    rowCache        // this host's rows, encoded (list.go)
}

// LegacyEnvironment says which of the legacy agent's settings this agent
// has (never their values). Field names are the backend's.
type LegacyEnvironment struct {
	HasAuthToken  bool   `json:"hasAuthToken"`  // DTMA_BEARER_TOKEN is set
	HasAPIKey     bool   `json:"hasApiKey"`     // BACKEND_TO_DTMA_API_KEY is set
	HasAPIBaseURL bool   `json:"hasApiBaseUrl"` // AGENTOPIA_API_BASE_URL is set (heartbeat on)
	Port          string `json:"port"`          // the listen port, as a string
}

// route is one registered route; the OpenAPI test checks the v1 ones
// against the document.
type route struct {
	Method, Path string
	Public       bool
	handler      http.HandlerFunc
}

func (s *Server) routes() []route {
	return append([]route{
		{Method: "GET", Path: "/health", Public: true, handler: s.handleHealth},
		{Method: "GET", Path: "/ready", Public: true, handler: s.handleReady},
		{Method: "GET", Path: "/status", Public: s.PublicStatus, handler: s.handleLegacyStatus},
		{Method: "POST", Path: "/tools", handler: s.handleLegacyDeploy},
		{Method: "GET", Path: "/tools/status", handler: s.handleLegacyToolsStatus},
		{Method: "POST", Path: "/tools/{ref}/start", handler: s.handleLegacyAction(dtma.OpStart)},
		{Method: "POST", Path: "/tools/{ref}/stop", handler: s.handleLegacyAction(dtma.OpStop)},
		{Method: "POST", Path: "/tools/{ref}/restart", handler: s.handleLegacyAction(dtma.OpRestart)},
		{Method: "GET", Path: "/tools/{ref}/status", handler: s.handleLegacyToolStatus},
		{Method: "GET", Path: "/tools/{ref}/logs", handler: s.handleLegacyLogs},
		{Method: "DELETE", Path: "/tools/{ref}", handler: s.handleLegacyRemove},

		{Method: "GET", Path: "/metrics", handler: s.handleMetrics},

		{Method: "GET", Path: "/v1/openapi.json", handler: s.handleOpenAPI},
		{Method: "GET", Path: "/v1/health", handler: s.handleV1Health},
		{Method: "POST", Path: "/v1/instances", handler: s.handleV1Deploy},
		{Method: "GET", Path: "/v1/instances", handler: s.handleV1List},
		{Method: "GET", Path: "/v1/instances/{ref}", handler: s.handleV1Get},
		{Method: "POST", Path: "/v1/instances/{ref}/start", handler: s.handleV1Action(dtma.OpStart)},
		{Method: "POST", Path: "/v1/instances/{ref}/stop", handler: s.handleV1Action(dtma.OpStop)},
		{Method: "POST", Path: "/v1/instances/{ref}/restart", handler: s.handleV1Action(dtma.OpRestart)},
		{Method: "DELETE", Path: "/v1/instances/{ref}", handler: s.handleV1Remove},
		{Method: "GET", Path: "/v1/instances/{ref}/logs", handler: s.handleV1Logs},
		{Method: "GET", Path: "/v1/fleet/instances", handler: s.handleV1Fleet},
		{Method: "POST", Path: "/v1/adopt", handler: s.handleV1Adopt},
		{Method: "GET", Path: "/v1/events", handler: s.handleV1Events},
	}, s.uiRoutes()...)
}

// Handler returns the routed, authenticated, logged and panic-safe
// handler. A path no route knows is a 404, a known path with another
// method a 405 with an Allow header; both only after authentication, so a
// caller without a token learns nothing about the routes (401).
func (s *Server) Handler() http.Handler {
	if s.Logger == nil {
		s.Logger = slog.New(slog.DiscardHandler)
	}
	limit := s.AuthFailureLimit
	if limit == 0 {
		limit = DefaultAuthFailureLimit
	}
	s.limiter = nil
	if limit > 0 {
		s.limiter = newAuthLimiter(limit, s.Logger)
	}
	if s.metrics == nil {
		s.metrics = s.newHTTPMetrics(s.Prometheus)
	}
	mux := http.NewServeMux()
	s.patterns = map[string]bool{}
	methods := map[string]bool{}
	for _, r := range s.routes() {
		h := r.handler
		if !r.Public {
			h = s.authenticate(h)
		}
		pattern := r.Method + " " + r.Path
		s.patterns[pattern] = true
		methods[r.Method] = true
		if r.Method == "GET" {
			methods["HEAD"] = true
		}
		mux.HandleFunc(pattern, h)
	}
	s.methods = slices.Sorted(maps.Keys(methods))
	mux.HandleFunc("/", s.authenticate(s.handleUnmatched(mux)))
	return s.recover(s.logRequests(mux))
}

// ListenAndServe serves on l until ctx ends, then shuts down gracefully
// (in-flight requests get up to 10 s). It never touches containers. At
// most MaxConns connections are served at once; with TLSConfig set the
// listener speaks TLS.
func (s *Server) ListenAndServe(ctx context.Context, l net.Listener) error {
	readTimeout, idle, maxConns := s.ReadTimeout, s.IdleTimeout, s.MaxConns
	if readTimeout <= 0 {
		readTimeout = DefaultReadTimeout
	}
	if idle <= 0 {
		idle = DefaultIdleTimeout
	}
	if maxConns <= 0 {
		maxConns = DefaultMaxConns
	}
	s.srv = &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: min(DefaultReadHeaderTimeout, readTimeout),
		ReadTimeout:       readTimeout,
		IdleTimeout:       idle,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(s.Logger.Handler(), slog.LevelDebug),
	}
	l = LimitListener(l, maxConns)
	if s.TLSConfig != nil {
		cfg := s.TLSConfig.Clone()
		cfg.NextProtos = []string{"http/1.1"} // no HTTP/2: the limits above are HTTP/1.1's
		if cfg.MinVersion == 0 {
			cfg.MinVersion = tls.VersionTLS12
		}
		s.srv.TLSConfig = cfg
		s.srv.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){}
		l = tls.NewListener(l, cfg)
	}
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(l) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	s.streamsDone()
	s.stopStreams() // event streams end; Shutdown waits for them
	err := s.srv.Shutdown(sctx)
	<-errc
	return err
}

// authenticate requires "Authorization: Bearer <token>": 401 when the
// header is missing or malformed, 403 when the token is wrong. Tokens are
// compared in constant time (over their SHA-256, so length leaks nothing).
// A refusal reads no body and closes the connection. A source address
// that failed AuthFailureLimit times within a minute is answered 429 with
// Retry-After, without its token being checked, until the minute is over.
func (s *Server) authenticate(next http.HandlerFunc) http.HandlerFunc {
	sums := make([][32]byte, 0, len(s.Tokens))
	for _, t := range s.Tokens {
		if t != "" {
			sums = append(sums, sha256.Sum256([]byte(t)))
		}
	}
	return func(w http.ResponseWriter, r *http.Request) {
		src, hasSrc := sourceOf(r.RemoteAddr)
		limited := s.limiter != nil && hasSrc
		if limited {
			if wait, blocked := s.limiter.blocked(src); blocked {
				w.Header().Set("Retry-After", strconv.Itoa(int((wait+time.Second-1)/time.Second)))
				s.refuse(w, r, dtma.Errorf(dtma.ERATELIMITED, "too many failed authentications from this address; retry later"))
				return
			}
		}
		refuse := func(err error) {
			if limited {
				s.limiter.fail(src)
			}
			s.refuse(w, r, err)
		}
		h := r.Header.Get("Authorization")
		scheme, tok, ok := strings.Cut(h, " ")
		tok = strings.TrimSpace(tok)
		if h == "" || !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" {
			refuse(dtma.Errorf(dtma.EUNAUTHORIZED, "missing or malformed Authorization header; expected \"Bearer <token>\""))
			return
		}
		sum := sha256.Sum256([]byte(tok))
		match := 0
		for _, want := range sums {
			match |= subtle.ConstantTimeCompare(sum[:], want[:])
		}
		if match != 1 {
			refuse(dtma.Errorf(dtma.EFORBIDDEN, "invalid token"))
			return
		}
		if info := infoOf(r.Context()); info != nil {
			info.who = tokenFingerprint(tok)
		}
		next(w, r)
	}
}

// refuse answers err with Connection: close and ends the connection
// without reading the request's body: net/http would otherwise read up to
// 256 KB of a body the client announced before closing, holding the
// connection until the read timeout when the body never comes.
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, err error) {
	w.Header().Set("Connection", "close")
	s.writeError(w, r, err)
	// The answer is flushed before net/http drains the body; a read
	// deadline in the past makes that drain fail at once. Not supported
	// by test recorders, which have no connection.
	_ = http.NewResponseController(w).SetReadDeadline(time.Now())
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

func (r *statusRecorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// logRequests counts every request in the metrics and logs its method,
// path, source, status and duration; never headers or bodies (they carry
// tokens and env values). Method and path are truncated (they are the
// client's). Metrics label only registered routes and standard methods;
// everything else is counted as route "unmatched" or method "other", so
// no request can add a series. A 429 is not logged per request: the
// limiter logs once per source and window.
func (s *Server) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		info := &requestInfo{id: requestID(r)}
		r = r.WithContext(context.WithValue(r.Context(), requestInfoKey{}, info))
		w.Header().Set(RequestIDHeader, info.id)
		rec := &statusRecorder{ResponseWriter: w}
		next.ServeHTTP(rec, r)
		route := s.routeLabel(r)
		s.metrics.observe(methodLabel(r.Method), route, rec.status, time.Since(start))
		if (r.URL.Path == "/health" || r.URL.Path == "/ready" || isUIPoll(r)) && rec.status == http.StatusOK {
			return // liveness probes and the dashboard's refreshes would drown the log
		}
		if rec.status == http.StatusTooManyRequests {
			return
		}
		s.Logger.Info("http", "request_id", info.id, "method", truncate(r.Method), "path", truncate(r.URL.Path), "remote", remoteIP(r),
			"status", rec.status, "duration_ms", time.Since(start).Milliseconds())
		if mutating(r.Method) && route != "unmatched" {
			// The audit line: who (the token's fingerprint, never the
			// token), what (route and the instance it names), outcome.
			who := info.who
			if who == "" {
				who = "unauthenticated"
			}
			s.Logger.Info("audit", "request_id", info.id, "who", who, "remote", remoteIP(r), "action", methodLabel(r.Method)+" "+route,
				"ref", truncate(r.PathValue("ref")), "status", rec.status, "outcome", outcome(rec.status))
		}
	})
}

// remoteIP is the request's source address without the port.
func remoteIP(r *http.Request) string {
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return host
	}
	return truncate(r.RemoteAddr)
}

func (s *Server) recover(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.Logger.Error("panic", "method", truncate(r.Method), "path", truncate(r.URL.Path), "panic", v, "stack", string(debug.Stack()))
				s.writeError(w, r, dtma.Errorf(dtma.EINTERNAL, "internal error"))
			}
		}()
		next.ServeHTTP(w, r)
	})
}

func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write([]byte("OK"))
}

// handleUnmatched answers a request no route took: 405 with an Allow
// header when the path is a route's with other methods, else 404. Method
// and path are echoed truncated.
func (s *Server) handleUnmatched(mux *http.ServeMux) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if allow := s.allowedMethods(mux, r); len(allow) > 0 {
			w.Header().Set("Allow", strings.Join(allow, ", "))
			s.writeError(w, r, dtma.Errorf(dtma.EMETHOD, "%s is not allowed on %s; allowed: %s", truncate(r.Method), truncate(r.URL.Path), strings.Join(allow, ", ")))
			return
		}
		s.writeError(w, r, dtma.Errorf(dtma.ENOTFOUND, "no route %s %s", truncate(r.Method), truncate(r.URL.Path)))
	}
}

// allowedMethods returns the methods the mux has a registered route for
// at r's path (HEAD with GET, as the mux serves it), sorted; none when no
// route has this path.
func (s *Server) allowedMethods(mux *http.ServeMux, r *http.Request) []string {
	var allow []string
	for _, m := range s.methods {
		probe := r.Clone(r.Context())
		probe.Method = m
		if _, pattern := mux.Handler(probe); s.patterns[pattern] {
			allow = append(allow, m)
		}
	}
	return allow
}

// isV1 reports whether the request is for the v1 face (errors in the v1
// envelope) rather than the legacy one.
func isV1(r *http.Request) bool { return strings.HasPrefix(r.URL.Path, "/v1/") }

// codeStatuses is the one table of dtma error codes and their HTTP
// statuses: the server answers with it (statusOf), the client reads
// answers without a v1 error body with it (codeOf).
var codeStatuses = map[string]int{
	dtma.EINVALID:      http.StatusBadRequest,
	dtma.EUNAUTHORIZED: http.StatusUnauthorized,
	dtma.EFORBIDDEN:    http.StatusForbidden,
	dtma.ENOTFOUND:     http.StatusNotFound,
	dtma.ECONFLICT:     http.StatusConflict,
	dtma.EMETHOD:       http.StatusMethodNotAllowed,
	dtma.ERATELIMITED:  http.StatusTooManyRequests,
	dtma.EUNAVAILABLE:  http.StatusServiceUnavailable,
}

// statusOf maps a dtma error code to its HTTP status (500 for EINTERNAL
// and any code it does not know).
func statusOf(code string) int {
	if st, ok := codeStatuses[code]; ok {
		return st
	}
	return http.StatusInternalServerError
}

// codeOf is statusOf's inverse: EINTERNAL for a status no code has.
func codeOf(status int) string {
	for code, st := range codeStatuses {
		if st == status {
			return code
		}
	}
	return dtma.EINTERNAL
}

// writeError answers err in the envelope of the request's face: v1
// {"error": {"code", "message", "field"}}; legacy {"success": false,
// "message"} (plus "error", the code, for a 5xx, a 405 and a 429).
// Internal errors are logged and shown generically.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	code := dtma.ErrorCode(err)
	status := statusOf(code)
	msg := dtma.ErrorMessage(err)
	if code == dtma.EINTERNAL {
		s.Logger.Error("internal error", "method", truncate(r.Method), "path", truncate(r.URL.Path), "err", err)
	}
	if isV1(r) {
		body := map[string]any{"code": code, "message": msg}
		if f := dtma.ErrorField(err); f != "" {
			body["field"] = f
		}
		writeJSON(w, status, map[string]any{"error": body})
		return
	}
	body := map[string]any{"success": false, "message": msg}
	if status >= 500 || code == dtma.EMETHOD || code == dtma.ERATELIMITED {
		body["error"] = code
	}
	writeJSON(w, status, body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}
