package dlmhttp

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/wire"
)

// statuses maps each wire error code to its HTTP status: the one table of
// README's list of error codes. A code missing here is answered as 500 internal.
var statuses = map[string]int{
	dlm.CodeInvalidArgument:      http.StatusBadRequest,
	dlm.CodeUnauthenticated:      http.StatusUnauthorized,
	dlm.CodePermissionDenied:     http.StatusForbidden,
	dlm.CodeNotFound:             http.StatusNotFound,
	dlm.CodeLockConflict:         http.StatusConflict,
	dlm.CodeWaitTimeout:          http.StatusConflict,
	dlm.CodeLeaseEnded:           http.StatusGone,
	dlm.CodePayloadTooLarge:      http.StatusRequestEntityTooLarge,
	dlm.CodeIdempotencyKeyReused: http.StatusUnprocessableEntity,
	dlm.CodeLimitExceeded:        http.StatusTooManyRequests,
	dlm.CodeUnavailable:          http.StatusServiceUnavailable,
	dlm.CodeInternal:             http.StatusInternalServerError,
	// The two codes that end a watch, which is a WebSocket: they reach a
	// client as close reasons (see closeReason), these statuses only if
	// they ever end a plain request.
	dlm.CodeCompacted:    http.StatusGone,
	dlm.CodeSlowConsumer: http.StatusServiceUnavailable,
}

// StatusOf returns the HTTP status for a wire error code, 500 for codes it
// does not know.
func StatusOf(code string) int {
	if s, ok := statuses[code]; ok {
		return s
	}
	return http.StatusInternalServerError
}

// methodNotAllowed answers a known path with a method it does not serve. 405
// is not in the API's table of error codes; its body carries code invalid_argument, the code a
// client that only knows the table would pick for a malformed request.
type methodNotAllowed struct{ allow string }

func (e *methodNotAllowed) Error() string { return "method not allowed; use " + e.allow }

// errorBody is the JSON of every error response.
type errorBody struct {
	Error wireError `json:"error"`
}

type wireError struct {
	Code    string         `json:"code"`
	Message string         `json:"message"`
	Details map[string]any `json:"details,omitempty"`
}

// writeError answers r with err. A *dlm.Error is shown as it is; anything
// else is logged and answered with a generic 500, so that internal details
// never reach a client. A request whose context ended (the client went away,
// or the server is stopping) is answered 503 and logged at debug level.
func (h *Handler) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var (
		status int
		body   wireError
		de     *dlm.Error
		mna    *methodNotAllowed
		htl    *headersTooLarge
	)
	switch {
	case errors.As(err, &htl):
		status = http.StatusRequestHeaderFieldsTooLarge
		body = wireError{Code: dlm.CodePayloadTooLarge, Message: htl.Error()}
	case errors.As(err, &mna):
		w.Header().Set("Allow", mna.allow)
		status = http.StatusMethodNotAllowed
		body = wireError{Code: dlm.CodeInvalidArgument, Message: "method " + r.Method + " is not allowed here; allowed: " + mna.allow}
	case errors.As(err, &de):
		status = StatusOf(de.Code)
		body = wireError{Code: de.Code, Message: de.Message}
		if status == http.StatusInternalServerError {
			h.log.Error("internal error", "method", r.Method, "path", logPath(r), "err", err)
			body = wireError{Code: dlm.CodeInternal, Message: "internal error"}
			break
		}
		if de.Cause != nil {
			h.logCause(r, de)
		}
		body.Details = details(de)
		if de.Code == dlm.CodeUnauthenticated {
			w.Header().Set("WWW-Authenticate", `Bearer realm="dlm"`)
		}
	case r.Context().Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)):
		h.log.Debug("request ended before an answer", "method", r.Method, "path", logPath(r), "err", err)
		status = http.StatusServiceUnavailable
		body = wireError{Code: dlm.CodeUnavailable, Message: "request cancelled"}
	default:
		h.log.Error("internal error", "method", r.Method, "path", logPath(r), "err", err)
		status = http.StatusInternalServerError
		body = wireError{Code: dlm.CodeInternal, Message: "internal error"}
	}
	writeJSON(w, status, errorBody{Error: body})
}

// logCause logs the cause of de, which its client is not shown, rate
// limited (Handler.failures) with a count of the lines held back.
func (h *Handler) logCause(r *http.Request, de *dlm.Error) {
	if held, ok := h.failures.Allow("request failed", time.Now()); ok {
		h.log.Error("request failed", "code", de.Code, "method", r.Method, "path", logPath(r), "err", de.Cause, "held_back", held)
	}
}

// closeReason is the reason text that ends a WebSocket with de: its code,
// then its message, so that a client can tell the codes apart.
func closeReason(de *dlm.Error) string {
	if de.Message == "" {
		return de.Code
	}
	return de.Code + ": " + de.Message
}

// details returns the details object of de, or nil if it has none:
// holders for lock_conflict and wait_timeout (an empty list when only
// waiters or a lock-delay stand in the way) and, for a multi-lock
// acquire, name, the lock that blocked; reason for lease_ended; field (and
// max, the field's upper bound, where it has one) for invalid_argument.
func details(de *dlm.Error) map[string]any {
	switch de.Code {
	case dlm.CodeLockConflict, dlm.CodeWaitTimeout:
		if de.Lock != "" {
			return map[string]any{"name": de.Lock, "holders": wire.Holders(de.Holders)}
		}
		return map[string]any{"holders": wire.Holders(de.Holders)}
	case dlm.CodeLeaseEnded:
		if de.Reason != 0 {
			return map[string]any{"reason": de.Reason.String()}
		}
	case dlm.CodeInvalidArgument:
		if de.Field != "" && de.Max > 0 {
			return map[string]any{"field": de.Field, "max": de.Max}
		}
		if de.Field != "" {
			return map[string]any{"field": de.Field}
		}
	}
	return nil
}

// logLevel is the level of the per-request log line for a status: debug,
// or warn for a server-side failure.
func logLevel(status int) slog.Level {
	if status >= 500 {
		return slog.LevelWarn
	}
	return slog.LevelDebug
}
