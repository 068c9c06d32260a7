package dtma

import (
	"errors"
	"fmt"
)

// Error codes. Each maps to one HTTP status in the http package and is part
// of the v1 API contract: clients switch on the code, never on the message.
const (
	EINVALID      = "invalid"      // 400: the request names a bad field.
	EUNAUTHORIZED = "unauthorized" // 401: no or malformed credentials.
	EFORBIDDEN    = "forbidden"    // 403: credentials present but wrong.
	ENOTFOUND     = "not_found"    // 404: no such instance.
	ECONFLICT     = "conflict"     // 409: the request clashes with existing state.
	EUNAVAILABLE  = "unavailable"  // 503: Docker or the registry cannot be reached.
	EINTERNAL     = "internal"     // 500: a bug or an unexpected failure.
)

// Error codes of the HTTP layer itself (routing and authentication
// throttling); the domain never returns them.
const (
	EMETHOD      = "method_not_allowed" // 405: the route exists, not with this method.
	ERATELIMITED = "rate_limited"       // 429: too many failed authentications from this address.
)

// Error is a domain error meant to be shown to the caller. Its Message must
// never contain a secret (an env value, a token).
type Error struct {
	// Code is one of the E* constants.
	Code string
	// Field names the offending request field for EINVALID and ECONFLICT
	// errors ("ports[0].host_port"); empty otherwise.
	Field string
	// Message is a human-readable explanation for the caller.
	Message string
	// Err is an optional underlying cause; it is not shown to callers.
	Err error
}

// Error implements the error interface.
func (e *Error) Error() string {
	msg := e.Message
	if e.Field != "" {
		msg = e.Field + ": " + msg
	}
	if e.Err != nil {
		return fmt.Sprintf("dtma %s: %s: %v", e.Code, msg, e.Err)
	}
	return fmt.Sprintf("dtma %s: %s", e.Code, msg)
}

// Unwrap returns the underlying cause, if any.
func (e *Error) Unwrap() error { return e.Err }

// Errorf returns a domain error with the given code and formatted message.
func Errorf(code string, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// FieldErrorf returns an EINVALID-style error that names the offending field.
func FieldErrorf(code, field, format string, args ...any) *Error {
	return &Error{Code: code, Field: field, Message: fmt.Sprintf(format, args...)}
}

// ErrorCode returns the code of the first *Error in err's chain, EINTERNAL
// for any other non-nil error, and "" for nil.
func ErrorCode(err error) string {
	var e *Error
	if err == nil {
		return ""
	} else if errors.As(err, &e) {
		return e.Code
	}
	return EINTERNAL
}

// ErrorMessage returns the caller-facing message of the first *Error in err's
// chain (prefixed by its field when set), or a generic message for any other
// error so that internal details never leak to callers.
func ErrorMessage(err error) string {
	var e *Error
	if err == nil {
		return ""
	} else if errors.As(err, &e) {
		if e.Field != "" {
			return e.Field + ": " + e.Message
		}
		return e.Message
	}
	return "internal error"
}

// ErrorField returns the Field of the first *Error in err's chain, or "".
func ErrorField(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Field
	}
	return ""
}
