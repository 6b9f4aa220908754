package dlmhttp

import (
	"net/http"
	"net/url"
	"strings"

	"github.com/dlmhq/dlm"
)

// checkOrigin refuses, with 403 permission_denied, a WebSocket handshake
// that a browser sends from a page of another origin.
//
// Browsers let any page open a WebSocket to any host, with no CORS check,
// but they always send Origin. dlm's keys travel in headers and
// subprotocols, which a browser never adds by itself, so today a foreign
// page cannot borrow them; the check is there so that this stays true if a
// credential that browsers do add (a cookie, an auth proxy in front) ever
// reaches the server, and so that only pages the server served itself (the
// dashboard) talk to its WebSockets.
//
// When Origin is present it must be the request's own scheme and host;
// "null", several values and anything unparsable are refused. Requests
// without Origin (the Go client, the CLI, curl) are not from a browser and
// pass. The scheme is https when the connection is TLS or a proxy in front
// says so with X-Forwarded-Proto (a page cannot set headers on a WebSocket),
// else http. Hosts compare without case; ports must be equal as written.
//
// Every WebSocket route calls it before the upgrade.
func checkOrigin(r *http.Request) error {
	origin := r.Header.Values("Origin")
	if len(origin) == 0 {
		return nil
	}
	if len(origin) > 1 {
		return errCrossOrigin
	}
	u, err := url.Parse(origin[0])
	if err != nil || u.Host == "" || u.Path != "" || u.User != nil {
		return errCrossOrigin
	}
	if !strings.EqualFold(u.Scheme, requestScheme(r)) || !strings.EqualFold(u.Host, r.Host) {
		return errCrossOrigin
	}
	return nil
}

var errCrossOrigin = dlm.Errorf(dlm.CodePermissionDenied, "the Origin of this WebSocket is not this server's own origin")

// requestScheme returns the scheme the browser used to reach the server.
func requestScheme(r *http.Request) string {
	if r.TLS != nil {
		return "https"
	}
	if p := r.Header.Get("X-Forwarded-Proto"); strings.EqualFold(p, "https") {
		return "https"
	}
	return "http"
}
