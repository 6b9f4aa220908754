// Package dlmhttp serves the dlm HTTP API on an engine.Engine: JSON routes
// for locks, leases, tenants and keys, health checks, the error format with
// its one table of statuses, and the API's OpenAPI document (openapi.json).
//
// It routes on the escaped path itself, with no http.ServeMux, so that lock
// names may carry percent-encoded (or plain) slashes and no request is ever
// cleaned or redirected.
package dlmhttp

import (
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/engine"
	"github.com/dlmhq/dlm/internal/addrlimit"
	"github.com/dlmhq/dlm/lograte"
)

// Handler is the http.Handler of the dlm API. It is safe for concurrent use.
type Handler struct {
	engine   *engine.Engine
	log      *slog.Logger
	routes   []route
	patterns []pattern // routes[i].pattern, split once
	observe  func(route, method string, status int, d time.Duration)
	// failures limits the log lines of failed requests: a storage outage
	// fails every request, and a line each would flood the disk.
	failures    lograte.Limiter
	bodyTimeout time.Duration // WithBodyTimeout
	frames      frameCache    // watch messages, encoded once
	maxConns    int           // WithMaxConnections; used by Server
	// failedAuth limits failed authentications per client address (see
	// refused); authFailed, if set, is called for each, for metrics.
	failedAuth addrlimit.Limiter
	authFailed func()
}

// Option configures a Handler.
type Option func(*Handler)

// WithLogger sends the handler's logs to l instead of slog.Default(): one
// line per request at debug level (warn for 5xx), internal errors at error
// level.
func WithLogger(l *slog.Logger) Option {
	return func(h *Handler) { h.log = l }
}

// WithRoute serves method and the exact path with next, without
// authentication: for /metrics and the like. Routes of the dlm API take
// precedence.
func WithRoute(method, path string, next http.Handler) Option {
	return func(h *Handler) {
		h.routes = append(h.routes, route{method, path, public, nil,
			func(_ *Handler, w http.ResponseWriter, r *http.Request, _ *call) error {
				next.ServeHTTP(w, r)
				return nil
			}})
	}
}

// WithObserver makes the handler call f once for every request, when
// ServeHTTP returns, for metrics. route is the pattern of the route that
// matched (e.g. "/v1/locks/{name...}/acquire"), never the path itself, or
// UnmatchedRoute; method is the request's method if it is a standard one,
// else "other"; status is the status sent and d the time spent. So every
// label has a small, fixed set of values. A request whose client left
// before the answer is reported with StatusClientClosedRequest. A WebSocket
// (/v1/watch) is reported when it closes, with status 101 and d its whole
// session. f runs on the request's goroutine and must be quick.
func WithObserver(f func(route, method string, status int, d time.Duration)) Option {
	return func(h *Handler) { h.observe = f }
}

// WithFailedAuth makes the handler call f once for every request refused
// for its key (401, or 429 once its address is over the limit of failed
// attempts), for metrics. f must be quick.
func WithFailedAuth(f func()) Option {
	return func(h *Handler) { h.authFailed = f }
}

// WithFailedAuthLimit sets how many failed authentications one address may
// make: n at once, refilled at n per per. Default: addrlimit's, 20 per
// 10 s.
func WithFailedAuthLimit(n int, per time.Duration) Option {
	return func(h *Handler) { h.failedAuth.Burst, h.failedAuth.Per = n, per }
}

// UnmatchedRoute is the route WithObserver reports for a request that no
// route matched, whatever its path (404, 405).
const UnmatchedRoute = "unmatched"

// NewHandler returns the handler of the dlm API on e.
func NewHandler(e *engine.Engine, opts ...Option) *Handler {
	h := &Handler{engine: e, log: slog.Default(), routes: routeTable(),
		bodyTimeout: DefaultBodyTimeout, maxConns: DefaultMaxConnections}
	for _, o := range opts {
		o(h)
	}
	for _, r := range h.routes {
		h.patterns = append(h.patterns, parsePattern(r.pattern))
	}
	return h
}

// call is what a route's handler learns about its request besides the
// request itself.
type call struct {
	params    pathParams // decoded path parameters
	query     query
	principal engine.Principal // zero for public routes
}

// ServeHTTP routes r, authenticates it and runs its handler. Every error is
// answered with the JSON error shape.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	r, body := bodyOf(w, r, h.bodyTimeout)
	sw := &statusWriter{ResponseWriter: w, body: body}
	var (
		rt  *route
		err error
	)
	if n := headerBytes(r); n > maxHeaderBytes {
		err = &headersTooLarge{n}
	} else {
		rt, err = h.serve(sw, r)
	}
	if err != nil {
		h.writeError(sw, r, err)
	}
	body.done(sw.status)
	status := sw.status
	switch {
	case status == 0:
		status = http.StatusOK // nothing written: net/http sends 200
	case status == http.StatusServiceUnavailable && r.Context().Err() != nil:
		// The client left before the answer (a blocking acquire given
		// up): the 503 went to nobody and is no failure of the server.
		status = StatusClientClosedRequest
	}
	d := time.Since(start)
	if h.observe != nil {
		route, method := UnmatchedRoute, methodLabel(r.Method)
		if rt != nil {
			route, method = rt.pattern, rt.method
		}
		h.observe(route, method, status, d)
	}
	if level := logLevel(status); h.log.Enabled(r.Context(), level) {
		// Failures repeat fast when storage is down or the disk is full:
		// one line per interval, not one per request, or the log fills
		// the disk again.
		args := []any{"method", r.Method, "path", logPath(r), "status", status, "duration", d, "remote", r.RemoteAddr}
		ok := true
		if level >= slog.LevelWarn {
			var held int
			held, ok = h.failures.Allow("request", time.Now())
			args = append(args, "held_back", held)
		}
		if ok {
			h.log.Log(r.Context(), level, "request", args...)
		}
	}
}

// StatusClientClosedRequest is the status that logs and WithObserver report
// for a request whose client went away before it was answered, as nginx
// does. It is never sent.
const StatusClientClosedRequest = 499

// serve answers r and returns the route that matched, if any.
func (h *Handler) serve(w http.ResponseWriter, r *http.Request) (*route, error) {
	path := r.URL.EscapedPath()
	rt, params, allow, err := h.find(r.Method, path)
	switch {
	case err != nil:
		return nil, err
	case rt == nil && len(allow) > 0:
		return nil, &methodNotAllowed{allow: strings.Join(allow, ", ")}
	case rt == nil:
		return nil, dlm.Errorf(dlm.CodeNotFound, "no route %s %s", r.Method, path)
	}
	c := &call{params: params}
	if rt.access != public {
		if c.principal, err = h.authorize(r, rt.access); err != nil {
			return rt, h.refused(w, r, err)
		}
	}
	if c.query, err = parseQuery(r, rt.query); err != nil {
		return rt, err
	}
	return rt, rt.serve(h, w, r, c)
}

// methodLabel returns m if it is a method of RFC 9110 or PATCH, else
// "other": clients choose the method, and a label must not take any value
// they send.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodTrace:
		return m
	}
	return "other"
}

// authorize authenticates r's bearer key and checks that its principal may
// use a route of kind a.
func (h *Handler) authorize(r *http.Request, a access) (engine.Principal, error) {
	key, err := bearer(r)
	if err != nil {
		return engine.Principal{}, err
	}
	p, err := h.engine.Authenticate(r.Context(), key)
	if err != nil {
		return p, err
	}
	switch {
	case a == adminKey && !p.Admin:
		return p, dlm.Errorf(dlm.CodePermissionDenied, "this call needs the admin key")
	case a == tenantKey && p.Admin:
		return p, dlm.Errorf(dlm.CodePermissionDenied, "the admin key belongs to no tenant: use a tenant key")
	}
	return p, nil
}

// refused handles a request that authorize refused with err and returns
// the error to answer. A failed authentication (no key, a malformed or
// unknown one) is counted and logged, rate-limited, at info level with the
// client's address; past the limit of one address (WithFailedAuthLimit) it
// is answered 429 limit_exceeded instead of 401. Only failures draw on
// an address's allowance, and a valid key never reaches it, so a valid key
// is never slowed or refused by it, even from an address over the limit.
//
// The limit does not keep a guesser from trying keys (their secrets have
// at least 128 random bits, so guessing is hopeless anyway); it tells a
// broken or hostile client to back off, and makes a scan stand out as 429s
// in the request metrics.
// Behind a proxy every client has the proxy's address and shares one
// allowance.
func (h *Handler) refused(w http.ResponseWriter, r *http.Request, err error) error {
	if dlm.ErrorCode(err) != dlm.CodeUnauthenticated {
		return err // 403, or the store could not be asked (503)
	}
	if h.authFailed != nil {
		h.authFailed()
	}
	now := time.Now()
	if held, ok := h.failures.Allow("authentication failed", now); ok {
		h.log.Info("authentication failed", "remote", r.RemoteAddr, "method", r.Method, "path", logPath(r), "err", err, "held_back", held)
	}
	if ok, retry := h.failedAuth.Allow(r.RemoteAddr, now); !ok {
		secs := int(retry.Seconds() + 0.999) // Retry-After is whole seconds, rounded up
		w.Header().Set("Retry-After", strconv.Itoa(secs))
		return dlm.Errorf(dlm.CodeLimitExceeded, "too many failed authentications from this address: retry in %ds", secs)
	}
	return err
}

// bearer returns the key of r's "Authorization: Bearer <key>" header or, for
// a WebSocket from a browser, which cannot set that header, of its offered
// subprotocol "bearer.<key>".
func bearer(r *http.Request) (string, error) {
	vals := r.Header.Values("Authorization")
	if len(vals) == 0 {
		if key := subprotocolKey(r); key != "" {
			return key, nil
		}
		return "", dlm.Errorf(dlm.CodeUnauthenticated, "missing API key: send Authorization: Bearer <key>")
	}
	scheme, key, ok := strings.Cut(vals[0], " ")
	key = strings.TrimSpace(key)
	if len(vals) > 1 || !ok || !strings.EqualFold(scheme, "Bearer") || key == "" {
		return "", dlm.Errorf(dlm.CodeUnauthenticated, "malformed Authorization header: send Authorization: Bearer <key>")
	}
	return key, nil
}

// logPath returns r's path for logs, without lease IDs: a lease ID is a
// bearer capability and logs are read by more people than its owner.
func logPath(r *http.Request) string {
	p := r.URL.EscapedPath()
	rest, ok := strings.CutPrefix(p, "/v1/leases/")
	if !ok {
		return p
	}
	if _, suffix, ok := strings.Cut(rest, "/"); ok {
		return "/v1/leases/{lease_id}/" + suffix
	}
	return "/v1/leases/{lease_id}"
}

// statusWriter records the status of a response for the request log, and
// closes the connection after an answer sent before the request's body was
// read to its end (see requestBody). It unwraps for
// http.ResponseController, so that handlers can still flush, set deadlines
// and hijack (WebSocket).
type statusWriter struct {
	http.ResponseWriter
	status int
	body   *requestBody
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
		if w.body.unread() && code != http.StatusSwitchingProtocols {
			w.Header().Set("Connection", "close")
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
