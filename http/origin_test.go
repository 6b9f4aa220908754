package dlmhttp_test

import (
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/coder/websocket"
	"github.com/dlmhq/dlm/dlmtest/testserver"
)

// TestWatchOrigin: a browser's WebSocket to /v1/watch is accepted from the
// server's own origin only; programs, which send no Origin, always are.
func TestWatchOrigin(t *testing.T) {
	s := testserver.New(t, nil)
	host := strings.TrimPrefix(s.URL, "http://")
	for _, c := range []struct {
		origin, proto string // "" sends no header
		ok            bool
	}{
		{"", "", true},
		{"http://" + host, "", true},
		{"HTTP://" + strings.ToUpper(host), "", true},
		{"https://" + host, "https", true}, // TLS ended by a proxy in front
		{"https://" + host, "", false},
		{"http://" + host, "https", false},
		{"http://evil.example", "", false},
		{"http://" + host + ".evil.example", "", false},
		{"http://127.0.0.1:1", "", false},
		{"http://" + host + "/path", "", false},
		{"null", "", false},
		{"not a url", "", false},
	} {
		hdr := http.Header{}
		if c.origin != "" {
			hdr.Set("Origin", c.origin)
		}
		if c.proto != "" {
			hdr.Set("X-Forwarded-Proto", c.proto)
		}
		conn, resp, err := websocket.Dial(t.Context(), s.URL+"/v1/watch", &websocket.DialOptions{
			HTTPHeader:   hdr,
			Subprotocols: []string{"dlm.v1", "bearer." + s.TenantKey},
		})
		if conn != nil {
			conn.CloseNow()
		}
		switch {
		case c.ok && err != nil:
			t.Errorf("Origin %q, X-Forwarded-Proto %q: %v; want the watch", c.origin, c.proto, err)
		case !c.ok && (err == nil || resp == nil || resp.StatusCode != http.StatusForbidden):
			t.Errorf("Origin %q, X-Forwarded-Proto %q: %v, %v; want 403", c.origin, c.proto, err, resp)
		}
	}
	// The refusal is the API's error shape, and comes before the upgrade.
	a := tenantAPI(t, s)
	a.wantError(403, "permission_denied", "GET", "/v1/watch", nil, "Origin", "http://evil.example")
	a.wantError(403, "permission_denied", "GET", "/v1/watch", nil, "Origin", "http://"+host, "Origin", "http://"+host)
	a.must(200, "GET", "/healthz", nil) // and the server is fine
}

// TestNoCORS: /v1 answers no preflight and grants no other origin.
func TestNoCORS(t *testing.T) {
	s := testserver.New(t, nil)
	a := tenantAPI(t, s)
	pre := a.do("OPTIONS", "/v1/locks", nil, "Origin", "http://evil.example", "Access-Control-Request-Method", "GET")
	get := a.do("GET", "/v1/locks", nil, "Origin", "http://evil.example")
	if pre.status/100 == 2 || get.status != 200 {
		t.Errorf("preflight = %d, GET = %d; want a refusal and 200", pre.status, get.status)
	}
	for _, r := range []*response{pre, get} {
		for k := range r.header {
			if strings.HasPrefix(k, "Access-Control-") {
				t.Errorf("response %d has %s: %q", r.status, k, r.header.Get(k))
			}
		}
	}
}

// inlineScript finds a script element without src, or an event handler
// attribute.
var inlineScript = regexp.MustCompile(`<script(\s[^>]*)?>\s*[^<\s]|\son[a-z]+\s*=`)

// TestDashboardRoutes: the page and its files need no key, carry the
// Content-Security-Policy, and an unknown file is the API's 404.
func TestDashboardRoutes(t *testing.T) {
	s := testserver.New(t, nil)
	anon := &api{t, s.URL, ""}
	host := strings.TrimPrefix(s.URL, "http://")
	for path, kind := range map[string]string{"/": "text/html", "/dashboard/app.js": "text/javascript", "/dashboard/style.css": "text/css"} {
		r := anon.do("GET", path, nil)
		csp := r.header.Get("Content-Security-Policy")
		if r.status != 200 || !strings.HasPrefix(r.header.Get("Content-Type"), kind) {
			t.Errorf("GET %s = %d %s", path, r.status, r.header.Get("Content-Type"))
		}
		for _, want := range []string{"default-src 'self'", "script-src 'self';", "connect-src 'self' ws://" + host + " wss://" + host + ";", "frame-ancestors 'none'"} {
			if !strings.Contains(csp, want) {
				t.Errorf("GET %s: policy %q lacks %q", path, csp, want)
			}
		}
		if again := anon.do("GET", path, nil, "If-None-Match", r.header.Get("ETag")); again.status != 304 {
			t.Errorf("GET %s with its ETag = %d, want 304", path, again.status)
		}
	}
	if page := anon.do("GET", "/", nil); inlineScript.Match(page.body) {
		t.Errorf("the page has inline script: %q", inlineScript.Find(page.body))
	}
	anon.wantError(404, "not_found", "GET", "/dashboard/nope.js", nil)
	anon.wantError(404, "not_found", "GET", "/dashboard/", nil)
	anon.wantError(404, "not_found", "GET", "/dashboard/static/app.js", nil)
	anon.wantError(405, "invalid_argument", "POST", "/", nil)
}
