package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/coder/websocket"
	"github.com/dlmhq/dlm"
)

// Errors of the client itself. Errors from the server are *dlm.Error values
// matched with the dlm sentinels.
var (
	// ErrLockLost is matched by a Lock's Err, and by the cause of its
	// Context, once the lease is lost: ended on the server, or no longer
	// provably held because a renewal could not be confirmed before the
	// lease's expiry. The error it is joined with says which.
	ErrLockLost = errors.New("dlm: lock lost")
	// ErrReleased is the cause of a Lock's Context after Release.
	ErrReleased = errors.New("dlm: lock released")
	// ErrCompacted is returned by Watch when the events after the
	// requested id are no longer retained; resume from the current
	// position (Since 0) and re-read state with Inspect. It is
	// dlm.ErrCompacted: either matches.
	ErrCompacted = dlm.ErrCompacted
)

// statusCodes maps an HTTP status to the code of the API's table of error codes, for error
// responses that carry no dlm error body (a proxy's 502, say).
var statusCodes = map[int]string{
	http.StatusBadRequest:            dlm.CodeInvalidArgument,
	http.StatusUnauthorized:          dlm.CodeUnauthenticated,
	http.StatusForbidden:             dlm.CodePermissionDenied,
	http.StatusNotFound:              dlm.CodeNotFound,
	http.StatusConflict:              dlm.CodeLockConflict,
	http.StatusGone:                  dlm.CodeLeaseEnded,
	http.StatusRequestEntityTooLarge: dlm.CodePayloadTooLarge,
	http.StatusUnprocessableEntity:   dlm.CodeIdempotencyKeyReused,
	http.StatusTooManyRequests:       dlm.CodeLimitExceeded,
	http.StatusBadGateway:            dlm.CodeUnavailable,
	http.StatusServiceUnavailable:    dlm.CodeUnavailable,
	http.StatusGatewayTimeout:        dlm.CodeUnavailable,
}

var endReasons = map[string]dlm.EndReason{
	"released":       dlm.Released,
	"expired":        dlm.Expired,
	"force_released": dlm.ForceReleased,
}

// decodeError turns an error response into a *dlm.Error.
func decodeError(status int, body []byte) *dlm.Error {
	var w wireError
	if json.Unmarshal(body, &w) == nil && w.Error.Code != "" {
		d := &w.Error.Details
		e := &dlm.Error{Code: w.Error.Code, Message: w.Error.Message, Field: d.Field, Max: d.Max, Reason: endReasons[d.Reason], Lock: d.Name}
		if len(d.Holders) > 0 {
			e.Holders = leases(d.Holders)
		}
		return e
	}
	code, ok := statusCodes[status]
	if !ok {
		code = dlm.CodeInternal
	}
	msg := strings.TrimSpace(string(body))
	if len(msg) > 200 {
		msg = msg[:200] + "…"
	}
	return &dlm.Error{Code: code, Message: fmt.Sprintf("HTTP %d %s: %s", status, http.StatusText(status), msg)}
}

// closeCodes are the codes a server names in the reason of a WebSocket it
// closes (the events API): "compacted", or "code: message".
var closeCodes = map[string]bool{dlm.CodeCompacted: true, dlm.CodeSlowConsumer: true, dlm.CodeUnavailable: true}

// closeError turns the error that ended a WebSocket into a *dlm.Error when
// the server closed it with a coded reason, and into a netError otherwise.
func closeError(err error) error {
	var ce websocket.CloseError
	if errors.As(err, &ce) {
		if code, msg, _ := strings.Cut(ce.Reason, ": "); closeCodes[code] {
			return &dlm.Error{Code: code, Message: msg}
		}
	}
	return &netError{err}
}

// netError is a request that failed below HTTP: connection refused or
// reset, EOF, a timeout. The request may or may not have reached the server.
type netError struct{ err error }

func (e *netError) Error() string { return e.err.Error() }
func (e *netError) Unwrap() error { return e.err }

// transient reports whether err is worth retrying: a network error, an
// unavailable server (503, or a proxy's 502/504), or a watch closed for
// falling behind, which resumes after the last event it yielded.
func transient(err error) bool {
	var ne *netError
	return errors.As(err, &ne) || errors.Is(err, dlm.ErrUnavailable) || errors.Is(err, dlm.ErrSlowConsumer)
}

// opError wraps err with the step that failed and the name it concerned.
func opError(op, name string, err error) error { return fmt.Errorf("%s %q: %w", op, name, err) }
