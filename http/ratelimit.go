package http

import (
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"
)

// Defaults for the failed-authentication limiter.
const (
	// DefaultAuthFailureLimit is how many failed authentications one source
	// may make per window before it is answered 429 without a token check.
	DefaultAuthFailureLimit = 10
	// authFailureWindow is the limiter's window, counted from a source's
	// first failure.
	authFailureWindow = time.Minute
	// maxAuthSources bounds the sources remembered; when full, expired
	// entries go first, then the oldest.
	maxAuthSources = 4096
)

// authLimiter counts failed authentications per source address in a fixed
// window. Its memory is bounded by maxSources entries whatever the number
// of addresses that fail.
type authLimiter struct {
	limit      int
	window     time.Duration
	maxSources int
	now        func() time.Time
	log        *slog.Logger

	mu      sync.Mutex
	sources map[netip.Prefix]*authFailures
}

// authFailures is one source's current window.
type authFailures struct {
	start    time.Time
	failures int
}

func newAuthLimiter(limit int, log *slog.Logger) *authLimiter {
	return &authLimiter{
		limit:      limit,
		window:     authFailureWindow,
		maxSources: maxAuthSources,
		now:        time.Now,
		log:        log,
		sources:    map[netip.Prefix]*authFailures{},
	}
}

// sourceOf returns the address a request came from as the key the limiter
// counts by: the IPv4 address, or the /64 an IPv6 address is in (one
// host usually holds a whole /64). ok is false when remoteAddr holds no
// IP (a Unix socket, a test); such requests are not limited.
func sourceOf(remoteAddr string) (netip.Prefix, bool) {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host = remoteAddr
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Prefix{}, false
	}
	ip = ip.Unmap().WithZone("")
	if ip.Is4() {
		return netip.PrefixFrom(ip, 32), true
	}
	p, _ := ip.Prefix(64)
	return p, true
}

// blocked reports whether src has used up its failures in the current
// window, and how long until the window ends (at least one second).
func (l *authLimiter) blocked(src netip.Prefix) (time.Duration, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.sources[src]
	if e == nil {
		return 0, false
	}
	now := l.now()
	left := e.start.Add(l.window).Sub(now)
	if left <= 0 {
		delete(l.sources, src)
		return 0, false
	}
	if e.failures < l.limit {
		return 0, false
	}
	if left < time.Second {
		left = time.Second
	}
	return left, true
}

// fail records a failed authentication from src. The failure that reaches
// the limit is logged (once per source and window), not every request.
func (l *authLimiter) fail(src netip.Prefix) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	e := l.sources[src]
	if e != nil && !now.Before(e.start.Add(l.window)) {
		e = nil
	}
	if e == nil {
		if _, ok := l.sources[src]; !ok && len(l.sources) >= l.maxSources {
			l.evictLocked(now)
		}
		e = &authFailures{start: now}
		l.sources[src] = e
	}
	e.failures++
	if e.failures == l.limit {
		l.log.Warn("failed authentications rate limited", "source", src.String(), "failures", e.failures,
			"window", l.window.String(), "until", e.start.Add(l.window).UTC().Format(time.RFC3339))
	}
}

// evictLocked makes room for one entry: it drops every expired entry, and
// the oldest one when none had expired.
func (l *authLimiter) evictLocked(now time.Time) {
	var oldest netip.Prefix
	var oldestStart time.Time
	for k, e := range l.sources {
		if !now.Before(e.start.Add(l.window)) {
			delete(l.sources, k)
			continue
		}
		if oldestStart.IsZero() || e.start.Before(oldestStart) {
			oldest, oldestStart = k, e.start
		}
	}
	if len(l.sources) >= l.maxSources {
		delete(l.sources, oldest)
	}
}
