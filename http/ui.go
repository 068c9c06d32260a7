package http

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"errors"
	"html/template"
	"io"
	"io/fs"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/agentopia/dtma"
)

// The web dashboard (/ui/): server-rendered pages from embedded templates,
// a little same-origin JavaScript, a signed session cookie (uisession.go)
// and CSRF tokens on everything that changes state. The API (/v1, the
// legacy routes) never accepts the cookie: the cookie's Path is /ui/ and
// those routes only read the Authorization header.

//go:embed ui
var uiFiles embed.FS

// UIConfig is what the dashboard shows beyond the InstanceService.
type UIConfig struct {
	// Disabled turns the dashboard off (DTMA_UI=false): /ui/ is then
	// answered like any unknown path (401 without a bearer token, else 404).
	Disabled bool
	// RegistryKind is "sqlite" or "postgres"; with "postgres" the host
	// page shows the fleet (every host's instances).
	RegistryKind string
	// DockerVersion reports the daemon's engine and API versions; nil
	// shows them as unknown.
	DockerVersion func(ctx context.Context) (engine, api string, err error)
	// SessionTTL is how long a login lasts (DefaultUISessionTTL when
	// zero).
	SessionTTL time.Duration
}

// dashboard serves /ui/. One is made per Handler call; its session key is
// new each time, so sessions never outlive the process.
type dashboard struct {
	s        *Server
	sessions *sessionKeeper
	tmpl     *template.Template
	static   fs.FS
	sums     [][32]byte
}

func (s *Server) uiRoutes() []route {
	if s.UI.Disabled {
		return nil
	}
	d := &dashboard{s: s, sessions: newSessionKeeper(s.Tokens, nil, s.UI.SessionTTL)}
	for _, t := range s.Tokens {
		if t != "" {
			d.sums = append(d.sums, sha256.Sum256([]byte(t)))
		}
	}
	d.tmpl = template.Must(template.New("ui").Funcs(uiFuncs).ParseFS(uiFiles, "ui/*.html"))
	d.static, _ = fs.Sub(uiFiles, "ui/static")
	page, part, api := d.page, d.partial, d.api
	return []route{
		{Method: "GET", Path: "/ui", Public: true, handler: d.headers(d.handleRedirectRoot)},
		{Method: "GET", Path: "/ui/static/{file}", Public: true, handler: d.headers(d.handleStatic)},
		{Method: "GET", Path: "/ui/login", Public: true, handler: d.headers(d.handleLoginPage)},
		{Method: "POST", Path: "/ui/login", Public: true, handler: d.headers(d.handleLogin)},
		{Method: "POST", Path: "/ui/logout", Public: true, handler: d.headers(page(true, d.handleLogout))},
		{Method: "GET", Path: "/ui/{$}", Public: true, handler: d.headers(page(false, d.handleInstancesPage))},
		{Method: "GET", Path: "/ui/instances/{ref}", Public: true, handler: d.headers(page(false, d.handleInstancePage))},
		{Method: "GET", Path: "/ui/host", Public: true, handler: d.headers(page(false, d.handleHostPage))},
		{Method: "GET", Path: "/ui/partials/instances", Public: true, handler: d.headers(part(d.handleInstancesPartial))},
		{Method: "GET", Path: "/ui/partials/instances/{ref}", Public: true, handler: d.headers(part(d.handleInstancePartial))},
		{Method: "GET", Path: "/ui/partials/host", Public: true, handler: d.headers(part(d.handleHostPartial))},
		{Method: "POST", Path: "/ui/api/instances/{ref}/{action}", Public: true, handler: d.headers(api(true, d.handleAction))},
		{Method: "GET", Path: "/ui/api/instances/{ref}/logs", Public: true, handler: d.headers(api(false, d.handleLogs))},
		{Method: "GET", Path: "/ui/api/events", Public: true, handler: d.headers(api(false, d.handleEvents))},
		{Method: "GET", Path: "/ui/", Public: true, handler: d.headers(page(false, d.handleNotFound))},
	}
}

// isUIPoll reports whether r is one of the dashboard's periodic refreshes,
// which are not logged per request when they succeed.
func isUIPoll(r *http.Request) bool {
	return r.Method == "GET" && strings.HasPrefix(r.URL.Path, "/ui/partials/")
}

// uiCSP allows nothing but this origin: no inline script or style, no
// framing, forms only to this origin.
const uiCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// headers sets the dashboard's security headers on every answer.
func (d *dashboard) headers(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", uiCSP)
		h.Set("X-Frame-Options", "DENY")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "same-origin") // not no-referrer: that makes a form POST's Origin "null"
		if !strings.HasPrefix(r.URL.Path, "/ui/static/") {
			h.Set("Cache-Control", "no-store")
		}
		next(w, r)
	}
}

type sessionHandler func(w http.ResponseWriter, r *http.Request, sess uiSession)

// session returns r's verified session.
func (d *dashboard) session(r *http.Request) (uiSession, error) {
	c, err := r.Cookie(uiSessionCookie)
	if err != nil {
		return uiSession{}, errBadSession
	}
	return d.sessions.verify(c.Value)
}

// sameOrigin reports whether a state-changing request may come from this
// page: an Origin header, when the browser sends one, must be this
// server's.
func sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		return true
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return o == scheme+"://"+r.Host
}

// csrfOK checks a state-changing request: same origin, and the session's
// CSRF token in the X-CSRF-Token header or the csrf form field.
func csrfOK(r *http.Request, sess uiSession) bool {
	if !sameOrigin(r) {
		return false
	}
	tok := r.Header.Get(uiCSRFHeader)
	if tok == "" {
		r.Body = http.MaxBytesReader(nil, r.Body, 4096)
		tok = r.PostFormValue(uiCSRFField)
	}
	return sess.checkCSRF(tok)
}

// page wraps a handler of a full page: without a session it redirects to
// the login page (303); a mutating page request without the CSRF token is
// a 403 page.
func (d *dashboard) page(mutating bool, next sessionHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		sess, err := d.session(r)
		if err != nil {
			http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
			return
		}
		if mutating && !csrfOK(r, sess) {
			d.render(w, http.StatusForbidden, "error", uiPage{Title: "Forbidden", CSRF: sess.csrf,
				Message: "This form was sent without this session's CSRF token (or from another site). Reload the page and try again."})
			return
		}
		next(w, r, sess)
	}
}

// partial wraps a handler of an HTML fragment the page's script fetches:
// without a session it answers 401 with a JSON error.
func (d *dashboard) partial(next sessionHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		sess, err := d.session(r)
		if err != nil {
			uiError(w, dtma.Errorf(dtma.EUNAUTHORIZED, "no valid dashboard session; log in again at /ui/login"))
			return
		}
		next(w, r, sess)
	}
}

// api wraps a JSON or text endpoint the page's script calls: 401 without
// a session, 403 when a mutating call lacks the CSRF token.
func (d *dashboard) api(mutating bool, next sessionHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		sess, err := d.session(r)
		if err != nil {
			uiError(w, dtma.Errorf(dtma.EUNAUTHORIZED, "no valid dashboard session; log in again at /ui/login"))
			return
		}
		if mutating && !csrfOK(r, sess) {
			uiError(w, dtma.FieldErrorf(dtma.EFORBIDDEN, uiCSRFHeader, "missing or wrong CSRF token (or another origin); reload the page"))
			return
		}
		next(w, r, sess)
	}
}

// uiError answers err as {"error": {"code", "message", "field"?}} (the v1
// shape), whatever the path.
func uiError(w http.ResponseWriter, err error) {
	code := dtma.ErrorCode(err)
	body := map[string]any{"code": code, "message": dtma.ErrorMessage(err)}
	if f := dtma.ErrorField(err); f != "" {
		body["field"] = f
	}
	writeJSON(w, statusOf(code), map[string]any{"error": body})
}

// render executes the named page template; a template error is logged
// and answered as a plain 500.
func (d *dashboard) render(w http.ResponseWriter, status int, name string, data any) {
	var b strings.Builder
	if err := d.tmpl.ExecuteTemplate(&b, name, data); err != nil {
		d.s.Logger.Error("ui template", "template", name, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, b.String())
}

func (d *dashboard) handleRedirectRoot(w http.ResponseWriter, r *http.Request) {
	http.Redirect(w, r, "/ui/", http.StatusMovedPermanently)
}

func (d *dashboard) handleStatic(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("file")
	data, err := fs.ReadFile(d.static, name)
	if err != nil || strings.Contains(name, "/") {
		http.NotFound(w, r)
		return
	}
	switch {
	case strings.HasSuffix(name, ".js"):
		w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
	case strings.HasSuffix(name, ".css"):
		w.Header().Set("Content-Type", "text/css; charset=utf-8")
	case strings.HasSuffix(name, ".svg"):
		w.Header().Set("Content-Type", "image/svg+xml")
	}
	w.Header().Set("Cache-Control", "no-cache")
	_, _ = w.Write(data)
}

// loginAttempt is the login page's state.
type loginAttempt struct {
	Error      string
	RetryAfter int
	LoggedOut  bool
}

func (d *dashboard) handleLoginPage(w http.ResponseWriter, r *http.Request) {
	if _, err := d.session(r); err == nil {
		http.Redirect(w, r, "/ui/", http.StatusSeeOther)
		return
	}
	d.render(w, http.StatusOK, "login", uiPage{Title: "Log in", Data: loginAttempt{LoggedOut: r.URL.Query().Has("out")}})
}

// handleLogin checks the pasted token like a bearer token: a wrong one is
// a 403 login page and counts as a failed authentication of its source
// address; a source over the limit gets 429 without its token being
// checked. A right one sets the session cookie and redirects to /ui/.
func (d *dashboard) handleLogin(w http.ResponseWriter, r *http.Request) {
	src, hasSrc := sourceOf(r.RemoteAddr)
	limited := d.s.limiter != nil && hasSrc
	if limited {
		if wait, blocked := d.s.limiter.blocked(src); blocked {
			secs := int((wait + time.Second - 1) / time.Second)
			w.Header().Set("Retry-After", strconv.Itoa(secs))
			w.Header().Set("Connection", "close")
			d.render(w, http.StatusTooManyRequests, "login", uiPage{Title: "Log in", Data: loginAttempt{
				Error: "Too many failed attempts from this address. Wait " + strconv.Itoa(secs) + " s, then try again.", RetryAfter: secs}})
			return
		}
	}
	if !sameOrigin(r) {
		d.render(w, http.StatusForbidden, "login", uiPage{Title: "Log in", Data: loginAttempt{Error: "This login form was sent from another site."}})
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 8192)
	tok := strings.TrimSpace(r.PostFormValue("token"))
	if scheme, rest, ok := strings.Cut(tok, " "); ok && strings.EqualFold(scheme, "Bearer") {
		tok = strings.TrimSpace(rest)
	}
	sum := sha256.Sum256([]byte(tok))
	match := 0
	for _, want := range d.sums {
		match |= subtle.ConstantTimeCompare(sum[:], want[:])
	}
	if tok == "" || match != 1 {
		if limited {
			d.s.limiter.fail(src)
		}
		msg := "That token is not accepted by this agent. Paste one of its bearer tokens (DTMA_BEARER_TOKEN, BACKEND_TO_DTMA_API_KEY or a line of DTMA_TOKEN_FILE)."
		if tok == "" {
			msg = "Paste a bearer token to log in."
		}
		d.render(w, http.StatusForbidden, "login", uiPage{Title: "Log in", Data: loginAttempt{Error: msg}})
		return
	}
	sess, value := d.sessions.issue()
	http.SetCookie(w, &http.Cookie{
		Name: uiSessionCookie, Value: value, Path: "/ui/", Expires: sess.expires,
		MaxAge: int(time.Until(sess.expires) / time.Second), HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode,
	})
	d.s.Logger.Info("ui login", "remote", remoteIP(r))
	http.Redirect(w, r, "/ui/", http.StatusSeeOther)
}

func (d *dashboard) handleLogout(w http.ResponseWriter, r *http.Request, sess uiSession) {
	d.sessions.revoke(sess)
	http.SetCookie(w, &http.Cookie{Name: uiSessionCookie, Value: "", Path: "/ui/", MaxAge: -1, HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, "/ui/login?out", http.StatusSeeOther)
}

func (d *dashboard) handleNotFound(w http.ResponseWriter, r *http.Request, sess uiSession) {
	d.render(w, http.StatusNotFound, "error", uiPage{Title: "Not found", CSRF: sess.csrf,
		Message: "There is no dashboard page at " + truncate(r.URL.Path) + "."})
}

func (d *dashboard) handleInstancesPage(w http.ResponseWriter, r *http.Request, sess uiSession) {
	view, err := d.instancesView(r)
	if err != nil {
		d.render(w, http.StatusOK, "instances", uiPage{Title: "Instances", Nav: "instances", CSRF: sess.csrf, Message: dtma.ErrorMessage(err)})
		return
	}
	view.Removed = truncate(r.URL.Query().Get("removed"))
	d.render(w, http.StatusOK, "instances", uiPage{Title: "Instances", Nav: "instances", CSRF: sess.csrf, Data: view})
}

func (d *dashboard) handleInstancesPartial(w http.ResponseWriter, r *http.Request, _ uiSession) {
	view, err := d.instancesView(r)
	if err != nil {
		uiError(w, err)
		return
	}
	d.render(w, http.StatusOK, "instances-live", view)
}

func (d *dashboard) handleInstancePage(w http.ResponseWriter, r *http.Request, sess uiSession) {
	inst, err := d.s.Service.FindInstance(r.Context(), r.PathValue("ref"))
	if err != nil {
		status := statusOf(dtma.ErrorCode(err))
		d.render(w, status, "error", uiPage{Title: "Instance", Nav: "instances", CSRF: sess.csrf, Message: dtma.ErrorMessage(err)})
		return
	}
	d.render(w, http.StatusOK, "instance", uiPage{Title: inst.Name, Nav: "instances", CSRF: sess.csrf, Data: d.instanceView(r, inst)})
}

func (d *dashboard) handleInstancePartial(w http.ResponseWriter, r *http.Request, _ uiSession) {
	inst, err := d.s.Service.FindInstance(r.Context(), r.PathValue("ref"))
	if err != nil {
		uiError(w, err)
		return
	}
	d.render(w, http.StatusOK, "instance-live", d.instanceView(r, inst))
}

func (d *dashboard) handleHostPage(w http.ResponseWriter, r *http.Request, sess uiSession) {
	d.render(w, http.StatusOK, "host", uiPage{Title: "Host", Nav: "host", CSRF: sess.csrf, Data: d.hostView(r)})
}

func (d *dashboard) handleHostPartial(w http.ResponseWriter, r *http.Request, _ uiSession) {
	d.render(w, http.StatusOK, "host-live", d.hostView(r))
}

// uiActionResult is the answer of POST /ui/api/instances/{ref}/{action}.
type uiActionResult struct {
	Changed  bool      `json:"changed"`
	Message  string    `json:"message"`
	Instance *Instance `json:"instance,omitempty"`
}

// handleAction runs start, stop, restart or remove; EINVALID naming
// "action" for anything else.
func (d *dashboard) handleAction(w http.ResponseWriter, r *http.Request, _ uiSession) {
	action := dtma.Op(r.PathValue("action"))
	ref := r.PathValue("ref")
	switch action {
	case dtma.OpStart, dtma.OpStop, dtma.OpRestart:
		inst, changed, err := d.s.doAction(r, action)
		if err != nil {
			uiError(w, err)
			return
		}
		wire := NewInstance(inst)
		writeJSON(w, http.StatusOK, uiActionResult{Changed: changed, Message: actionMessage(action, inst, changed), Instance: &wire})
	case dtma.OpRemove:
		inst, err := d.s.Service.FindInstance(r.Context(), ref)
		if err != nil {
			uiError(w, err)
			return
		}
		if err := d.s.Service.RemoveInstance(r.Context(), inst.ID); err != nil {
			uiError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, uiActionResult{Changed: true, Message: "instance " + inst.Name + " removed"})
	default:
		uiError(w, dtma.FieldErrorf(dtma.EINVALID, "action", "must be start, stop, restart or remove"))
	}
}

// handleLogs streams the container's output as text (tail: default 100;
// follow=true streams until the client goes away).
// handleEvents serves the instance event stream of GET /v1/events to the
// page's EventSource, which can only present the session cookie: same
// stream, same filters, cookie-authenticated like every /ui/ request.
func (d *dashboard) handleEvents(w http.ResponseWriter, r *http.Request, _ uiSession) {
	d.s.handleV1Events(w, r)
}

func (d *dashboard) handleLogs(w http.ResponseWriter, r *http.Request, _ uiSession) {
	opts, err := parseLogOptions(r, 100)
	if err != nil {
		uiError(w, err)
		return
	}
	rc, err := d.s.Service.InstanceLogs(r.Context(), r.PathValue("ref"), opts)
	if err != nil {
		uiError(w, err)
		return
	}
	defer rc.Close()
	if err := streamLogs(w, rc, opts.Follow); err != nil && !errors.Is(err, io.EOF) && r.Context().Err() == nil {
		d.s.Logger.Debug("ui logs stream ended", "err", err)
	}
}
