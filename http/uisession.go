package http

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"slices"
	"strings"
	"sync"
	"time"
)

// The dashboard's session: a stateless, HMAC-signed cookie.
//
// The signing key is HMAC-SHA256 over the configured bearer tokens (sorted,
// NUL-separated) keyed by 32 random bytes drawn when the process starts.
// A session therefore proves that its holder pasted one of this process's
// tokens; it dies with the process (every restart, in particular one with a
// new token, revokes every session), at its expiry, or at logout (the
// session id is remembered as revoked until it would have expired).
//
// Cookie value: base64url(payload) "." base64url(HMAC-SHA256(key, payload)),
// payload = 16-byte random session id || 8-byte big-endian expiry (Unix
// seconds). The CSRF token is derived, never stored:
// base64url(HMAC-SHA256(key, "csrf" || session id)).

const (
	// DefaultUISessionTTL is how long a dashboard session lasts.
	DefaultUISessionTTL = 12 * time.Hour
	// uiSessionCookie is the session cookie's name.
	uiSessionCookie = "dtma_session"
	// uiCSRFHeader carries the CSRF token on the dashboard's fetches.
	uiCSRFHeader = "X-CSRF-Token"
	// uiCSRFField carries the CSRF token in the dashboard's forms.
	uiCSRFField = "csrf"
	// maxRevokedSessions bounds the logged-out sessions remembered.
	maxRevokedSessions = 4096
	sessionIDLen       = 16
)

// errBadSession is any cookie that does not verify: malformed, forged,
// signed by another process or with other tokens, expired or logged out.
var errBadSession = errors.New("no valid session")

// uiSession is a verified session.
type uiSession struct {
	id      [sessionIDLen]byte
	expires time.Time
	csrf    string
}

// sessionKeeper signs and verifies sessions. It is safe for concurrent
// use.
type sessionKeeper struct {
	ttl        time.Duration
	now        func() time.Time
	maxRevoked int

	mu      sync.Mutex
	key     []byte
	revoked map[[sessionIDLen]byte]time.Time // id -> its expiry
}

// newSessionKeeper derives the signing key from tokens and salt (random
// when nil). ttl <= 0 means DefaultUISessionTTL.
func newSessionKeeper(tokens []string, salt []byte, ttl time.Duration) *sessionKeeper {
	if salt == nil {
		salt = make([]byte, 32)
		if _, err := rand.Read(salt); err != nil {
			panic("crypto/rand: " + err.Error()) // never fails on Linux
		}
	}
	if ttl <= 0 {
		ttl = DefaultUISessionTTL
	}
	sorted := slices.Clone(tokens)
	slices.Sort(sorted)
	m := hmac.New(sha256.New, salt)
	m.Write([]byte("dtma-ui-session-v1\x00"))
	for _, t := range sorted {
		if t != "" {
			m.Write([]byte(t))
			m.Write([]byte{0})
		}
	}
	return &sessionKeeper{key: m.Sum(nil), ttl: ttl, now: time.Now, maxRevoked: maxRevokedSessions, revoked: map[[sessionIDLen]byte]time.Time{}}
}

func (k *sessionKeeper) mac(parts ...[]byte) []byte {
	k.mu.Lock()
	key := k.key
	k.mu.Unlock()
	m := hmac.New(sha256.New, key)
	for _, p := range parts {
		m.Write(p)
	}
	return m.Sum(nil)
}

// issue returns a new session and its cookie value.
func (k *sessionKeeper) issue() (uiSession, string) {
	var s uiSession
	if _, err := rand.Read(s.id[:]); err != nil {
		panic("crypto/rand: " + err.Error())
	}
	s.expires = k.now().Add(k.ttl).Truncate(time.Second)
	payload := make([]byte, 0, sessionIDLen+8)
	payload = append(payload, s.id[:]...)
	payload = binary.BigEndian.AppendUint64(payload, uint64(s.expires.Unix()))
	s.csrf = k.csrfFor(s.id)
	enc := base64.RawURLEncoding
	return s, enc.EncodeToString(payload) + "." + enc.EncodeToString(k.mac(payload))
}

func (k *sessionKeeper) csrfFor(id [sessionIDLen]byte) string {
	return base64.RawURLEncoding.EncodeToString(k.mac([]byte("csrf"), id[:]))
}

// verify checks a cookie value; errBadSession unless it was issued by this
// keeper, has not expired and was not revoked.
func (k *sessionKeeper) verify(value string) (uiSession, error) {
	var s uiSession
	p, sig, ok := strings.Cut(value, ".")
	if !ok || len(value) > 200 {
		return s, errBadSession
	}
	enc := base64.RawURLEncoding
	payload, err1 := enc.DecodeString(p)
	mac, err2 := enc.DecodeString(sig)
	if err1 != nil || err2 != nil || len(payload) != sessionIDLen+8 {
		return s, errBadSession
	}
	if !hmac.Equal(mac, k.mac(payload)) {
		return s, errBadSession
	}
	copy(s.id[:], payload)
	s.expires = time.Unix(int64(binary.BigEndian.Uint64(payload[sessionIDLen:])), 0)
	if !k.now().Before(s.expires) {
		return s, errBadSession
	}
	k.mu.Lock()
	_, gone := k.revoked[s.id]
	k.mu.Unlock()
	if gone {
		return s, errBadSession
	}
	s.csrf = k.csrfFor(s.id)
	return s, nil
}

// checkCSRF reports whether token is s's CSRF token (constant time).
func (s uiSession) checkCSRF(token string) bool {
	return token != "" && hmac.Equal([]byte(token), []byte(s.csrf))
}

// revoke ends s before its expiry. Memory stays bounded: expired entries
// are dropped when the list is full; when all are still live, the key is
// replaced instead, which ends every session (failing safe: a logged-out
// session never comes back).
func (k *sessionKeeper) revoke(s uiSession) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(k.revoked) >= k.maxRevoked {
		now := k.now()
		for id, exp := range k.revoked {
			if !now.Before(exp) {
				delete(k.revoked, id)
			}
		}
		if len(k.revoked) >= k.maxRevoked {
			fresh := make([]byte, 32)
			if _, err := rand.Read(fresh); err != nil {
				panic("crypto/rand: " + err.Error())
			}
			m := hmac.New(sha256.New, fresh)
			m.Write(k.key)
			k.key = m.Sum(nil)
			clear(k.revoked)
			return
		}
	}
	k.revoked[s.id] = s.expires
}
