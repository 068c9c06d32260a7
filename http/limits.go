package http

import (
	"net"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
)

// Defaults for the connection limits (Server fields left zero).
const (
	// DefaultReadTimeout bounds reading one request, headers and body. It
	// stops applying once the body is read: a log follow or a deploy that
	// pulls for minutes is not cut by it (net/http clears the connection's
	// read deadline when the body hits EOF).
	DefaultReadTimeout = 30 * time.Second
	// DefaultReadHeaderTimeout bounds reading the request line and headers.
	DefaultReadHeaderTimeout = 10 * time.Second
	// DefaultIdleTimeout closes keep-alive connections idle this long.
	DefaultIdleTimeout = 60 * time.Second
	// DefaultMaxConns caps the connections served at once.
	DefaultMaxConns = 1024
	// maxHeaderBytes bounds a request's line and headers (net/http's
	// default is 1 MB): a full set of connections can hold at most
	// DefaultMaxConns × 64 KB of headers. Larger requests get a 431.
	maxHeaderBytes = 64 << 10
)

// maxLogString bounds an untrusted string (a path, a method, a user agent,
// a ref) in a log line.
const maxLogString = 256

// truncate returns s cut to at most maxLogString bytes (on a UTF-8
// boundary) followed by a marker giving the original length, so a 500 KB
// path costs a log line of about 300 bytes.
func truncate(s string) string {
	if len(s) <= maxLogString {
		return s
	}
	cut := maxLogString
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…[truncated, " + strconv.Itoa(len(s)) + " bytes]"
}

// limitListener accepts at most max connections at once: Accept blocks
// while max connections are open (further clients wait in the kernel's
// backlog) and continues when one closes.
type limitListener struct {
	net.Listener
	sem       chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

// LimitListener returns l accepting at most max concurrent connections.
func LimitListener(l net.Listener, max int) net.Listener {
	return &limitListener{Listener: l, sem: make(chan struct{}, max), done: make(chan struct{})}
}

// Accept waits for a free slot, then for a connection. Its errors are the
// wrapped listener's; after Close it returns net.ErrClosed.
func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.sem <- struct{}{}:
	case <-l.done:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.sem
		return nil, err
	}
	return &limitConn{Conn: c, release: func() { <-l.sem }}, nil
}

// Close closes the wrapped listener and ends a waiting Accept.
func (l *limitListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return l.Listener.Close()
}

// limitConn gives its slot back once, on the first Close.
type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
