package dlm

import (
	"errors"
	"fmt"
)

// Error codes, as they appear on the wire (README's list of error codes). The HTTP layer
// maps each to its status in one table; clients map them back.
const (
	CodeInvalidArgument      = "invalid_argument"
	CodeUnauthenticated      = "unauthenticated"
	CodePermissionDenied     = "permission_denied"
	CodeNotFound             = "not_found"
	CodeLockConflict         = "lock_conflict"
	CodeWaitTimeout          = "wait_timeout"
	CodeLeaseEnded           = "lease_ended"
	CodePayloadTooLarge      = "payload_too_large"
	CodeIdempotencyKeyReused = "idempotency_key_reused"
	CodeLimitExceeded        = "limit_exceeded"
	CodeUnavailable          = "unavailable"
	CodeInternal             = "internal"
	// CodeCompacted ends a watch whose since is older than the retained
	// event log: the events after it are gone.
	CodeCompacted = "compacted"
	// CodeSlowConsumer ends a watch that fell too far behind the log; a
	// watcher may resume from the last event it read.
	CodeSlowConsumer = "slow_consumer"
	// CodeCancelled answers a queued acquire of a session that the client
	// withdrew with the session's cancel operation.
	CodeCancelled = "cancelled"
)

// Error is the one error type that crosses package boundaries with a code a
// caller can act on. Anything else is internal: logged, never shown.
type Error struct {
	Code    string
	Message string
	// Holders is set for lock_conflict and wait_timeout: who holds the lock.
	Holders []Lease
	// Lock is set for the lock_conflict and wait_timeout of a multi-lock
	// acquire: the name of a lock that blocked it, whose Holders these are.
	Lock string
	// Reason is set for lease_ended.
	Reason EndReason
	// Field is set for invalid_argument: which input was wrong.
	Field string
	// Cause is the failure behind the error, such as a storage driver's,
	// for the server's logs. It is never sent to a client, whose message
	// stays generic.
	Cause error
	// Max is set for invalid_argument when Field has an upper bound the
	// server enforces (its --max-wait for wait_ms, say): that bound, in
	// the field's unit, so that a client can keep to it.
	Max int64
}

func (e *Error) Error() string {
	if e.Cause != nil {
		return e.Code + ": " + e.Message + ": " + e.Cause.Error()
	}
	return e.Code + ": " + e.Message
}

// Unwrap returns the cause, if any.
func (e *Error) Unwrap() error { return e.Cause }

// Is makes errors.Is(err, &Error{Code: c}) match any *Error with code c.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code && t.Message == ""
}

// Errorf returns an *Error with the given code and a formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Invalid returns an invalid_argument error naming field.
func Invalid(field, format string, args ...any) *Error {
	return &Error{Code: CodeInvalidArgument, Field: field, Message: field + ": " + fmt.Sprintf(format, args...)}
}

// ErrorCode returns the code of err if it is (or wraps) an *Error, and
// CodeInternal otherwise.
func ErrorCode(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return CodeInternal
}

// Sentinels for errors.Is. Each matches every *Error of its code.
var (
	ErrNotFound             = &Error{Code: CodeNotFound}
	ErrLockConflict         = &Error{Code: CodeLockConflict}
	ErrWaitTimeout          = &Error{Code: CodeWaitTimeout}
	ErrLeaseEnded           = &Error{Code: CodeLeaseEnded}
	ErrIdempotencyKeyReused = &Error{Code: CodeIdempotencyKeyReused}
	ErrLimitExceeded        = &Error{Code: CodeLimitExceeded}
	ErrUnavailable          = &Error{Code: CodeUnavailable}
	ErrUnauthenticated      = &Error{Code: CodeUnauthenticated}
	ErrCompacted            = &Error{Code: CodeCompacted}
	ErrSlowConsumer         = &Error{Code: CodeSlowConsumer}
)

// Unavailable returns the unavailable error of a storage failure: a generic
// message for clients, with cause kept for the logs.
func Unavailable(cause error) *Error {
	return &Error{Code: CodeUnavailable, Message: "storage is unavailable", Cause: cause}
}
