// Package http serves DTMA's two API faces over one dtma.InstanceService:
// the legacy routes the platform's backend already calls (/tools, /status,
// /health) and the v1 API (/v1/...). Every route but GET /health needs the
// bearer token.
package http

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"strings"
	"time"

	"github.com/agentopia/dtma"
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

	srv      *http.Server
	requests requestCounter
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
	return []route{
		{Method: "GET", Path: "/health", Public: true, handler: s.handleHealth},
		{Method: "GET", Path: "/status", Public: s.PublicStatus, handler: s.handleLegacyStatus},
		{Method: "POST", Path: "/tools", handler: s.handleLegacyDeploy},
		{Method: "GET", Path: "/tools/status", handler: s.handleLegacyToolsStatus},
		{Method: "POST", Path: "/tools/{ref}/start", handler: s.handleLegacyAction("start")},
		{Method: "POST", Path: "/tools/{ref}/stop", handler: s.handleLegacyAction("stop")},
		{Method: "POST", Path: "/tools/{ref}/restart", handler: s.handleLegacyAction("restart")},
		{Method: "GET", Path: "/tools/{ref}/status", handler: s.handleLegacyToolStatus},
		{Method: "GET", Path: "/tools/{ref}/logs", handler: s.handleLegacyLogs},
		{Method: "DELETE", Path: "/tools/{ref}", handler: s.handleLegacyRemove},

		{Method: "GET", Path: "/metrics", handler: s.handleMetrics},

		{Method: "GET", Path: "/v1/openapi.json", handler: s.handleOpenAPI},
		{Method: "GET", Path: "/v1/health", handler: s.handleV1Health},
		{Method: "POST", Path: "/v1/instances", handler: s.handleV1Deploy},
		{Method: "GET", Path: "/v1/instances", handler: s.handleV1List},
		{Method: "GET", Path: "/v1/instances/{ref}", handler: s.handleV1Get},
		{Method: "POST", Path: "/v1/instances/{ref}/start", handler: s.handleV1Action("start")},
		{Method: "POST", Path: "/v1/instances/{ref}/stop", handler: s.handleV1Action("stop")},
		{Method: "POST", Path: "/v1/instances/{ref}/restart", handler: s.handleV1Action("restart")},
		{Method: "DELETE", Path: "/v1/instances/{ref}", handler: s.handleV1Remove},
		{Method: "GET", Path: "/v1/instances/{ref}/logs", handler: s.handleV1Logs},
		{Method: "GET", Path: "/v1/fleet/instances", handler: s.handleV1Fleet},
		{Method: "POST", Path: "/v1/adopt", handler: s.handleV1Adopt},
	}
}

// Handler returns the routed, authenticated, logged and panic-safe
// handler.
func (s *Server) Handler() http.Handler {
	if s.Logger == nil {
		s.Logger = slog.New(slog.DiscardHandler)
	}
	mux := http.NewServeMux()
	for _, r := range s.routes() {
		h := r.handler
		if !r.Public {
			h = s.authenticate(h)
		}
		mux.HandleFunc(r.Method+" "+r.Path, h)
	}
	mux.HandleFunc("/", s.authenticate(s.handleNotFound))
	return s.recover(s.logRequests(mux))
}

// ListenAndServe serves on addr until ctx ends, then shuts down gracefully
// (in-flight requests get up to 10 s). It never touches containers.
func (s *Server) ListenAndServe(ctx context.Context, l net.Listener) error {
	s.srv = &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
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
	err := s.srv.Shutdown(sctx)
	<-errc
	return err
}

// authenticate requires "Authorization: Bearer <token>": 401 when the
// header is missing or malformed, 403 when the token is wrong. Tokens are
// compared in constant time (over their SHA-256, so length leaks nothing).
func (s *Server) authenticate(next http.HandlerFunc) http.HandlerFunc {
	sums := make([][32]byte, 0, len(s.Tokens))
	for _, t := range s.Tokens {
		if t != "" {
			sums = append(sums, sha256.Sum256([]byte(t)))
		}
	}
	return func(w http.ResponseWriter, r *http.Request) {
		h := r.Header.Get("Authorization")
		scheme, tok, ok := strings.Cut(h, " ")
		tok = strings.TrimSpace(tok)
		if h == "" || !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" {
			s.writeError(w, r, dtma.Errorf(dtma.EUNAUTHORIZED, "missing or malformed Authorization header; expected \"Bearer <token>\""))
			return
		}
		sum := sha256.Sum256([]byte(tok))
		match := 0
		for _, want := range sums {
			match |= subtle.ConstantTimeCompare(sum[:], want[:])
		}
		if match != 1 {
			s.writeError(w, r, dtma.Errorf(dtma.EFORBIDDEN, "invalid token"))
			return
		}
		next(w, r)
	}
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

// logRequests logs method, path, status and duration; never headers or
// bodies (they carry tokens and env values).
func (s *Server) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w}
		next.ServeHTTP(rec, r)
		route := r.Pattern // the matched route, so instance names do not explode the label set
		if i := strings.IndexByte(route, ' '); i >= 0 {
			route = route[i+1:]
		}
		s.requests.add(r.Method, route, rec.status)
		if r.URL.Path == "/health" && rec.status == http.StatusOK {
			return // liveness probes would drown the log
		}
		s.Logger.Info("http", "method", r.Method, "path", r.URL.Path, "status", rec.status, "duration_ms", time.Since(start).Milliseconds())
	})
}

func (s *Server) recover(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.Logger.Error("panic", "path", r.URL.Path, "panic", v, "stack", string(debug.Stack()))
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

func (s *Server) handleNotFound(w http.ResponseWriter, r *http.Request) {
	s.writeError(w, r, dtma.Errorf(dtma.ENOTFOUND, "no route %s %s", r.Method, r.URL.Path))
}

// isV1 reports whether the request is for the v1 face (errors in the v1
// envelope) rather than the legacy one.
func isV1(r *http.Request) bool { return strings.HasPrefix(r.URL.Path, "/v1/") }

// statusOf maps a dtma error code to its HTTP status.
func statusOf(code string) int {
	switch code {
	case dtma.EINVALID:
		return http.StatusBadRequest
	case dtma.EUNAUTHORIZED:
		return http.StatusUnauthorized
	case dtma.EFORBIDDEN:
		return http.StatusForbidden
	case dtma.ENOTFOUND:
		return http.StatusNotFound
	case dtma.ECONFLICT:
		return http.StatusConflict
	case dtma.EUNAVAILABLE:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// writeError answers err in the envelope of the request's face: v1
// {"error": {"code", "message", "field"}}; legacy {"success": false,
// "message"} (plus "error" for a 5xx). Internal errors are logged and
// shown generically.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	code := dtma.ErrorCode(err)
	status := statusOf(code)
	msg := dtma.ErrorMessage(err)
	if code == dtma.EINTERNAL {
		s.Logger.Error("internal error", "method", r.Method, "path", r.URL.Path, "err", err)
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
	if status >= 500 {
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
