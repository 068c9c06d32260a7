package http

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
)

// requestInfo travels with a request (in its context) so that the log
// line written after it can say who made it: the request id, and the
// fingerprint of the token that authenticated it.
type requestInfo struct {
	id  string
	who string // token fingerprint; "" when not authenticated
}

type requestInfoKey struct{}

// RequestIDHeader carries the request id in answers (and, when sane, is
// taken from the request: a proxy's id is kept).
const RequestIDHeader = "X-Request-Id"

// requestID returns the client's X-Request-Id when it is 1 to 64 bytes of
// [A-Za-z0-9._-], else a new random 16-hex-digit id.
func requestID(r *http.Request) string {
	if v := r.Header.Get(RequestIDHeader); len(v) > 0 && len(v) <= 64 {
		ok := true
		for _, c := range []byte(v) {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
				ok = false
				break
			}
		}
		if ok {
			return v
		}
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// tokenFingerprint names a token in logs without revealing it: "sha256:"
// and the first 12 hex digits of its SHA-256 — enough to tell the
// configured tokens apart, too little to test guesses against usefully
// (and tokens are long random strings).
func tokenFingerprint(token string) string {
	sum := sha256.Sum256([]byte(token))
	return "sha256:" + hex.EncodeToString(sum[:6])
}

func infoOf(ctx context.Context) *requestInfo {
	info, _ := ctx.Value(requestInfoKey{}).(*requestInfo)
	return info
}

// mutating reports whether a method changes state (and gets an audit line).
func mutating(method string) bool {
	switch method {
	case http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
		return true
	}
	return false
}

// outcome is the audit word for a status code.
func outcome(status int) string {
	switch {
	case status < 400:
		return "ok"
	case status == http.StatusUnauthorized || status == http.StatusForbidden || status == http.StatusTooManyRequests:
		return "refused"
	case status < 500:
		return "rejected"
	}
	return "failed"
}
