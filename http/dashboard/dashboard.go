// Package dashboard holds the web dashboard that dlm serve answers at "/":
// a page of locks, holders, waiters and events, written in plain JavaScript
// with no build step, embedded in the binary so that it needs no network
// and no files beside the binary.
//
// The page reads the API with the key a person signs in with. It keeps the
// key in the tab's sessionStorage and sends it only in the Authorization
// header and, for the watch WebSocket, in the subprotocol "bearer.<key>":
// never in a URL, where proxies, history and logs would keep it.
package dashboard

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"
	"time"
)

//go:embed static
var static embed.FS

// file is one embedded file, read once.
type file struct {
	body []byte
	kind string // Content-Type
	etag string
}

var files = load()

func load() map[string]file {
	m := map[string]file{}
	entries, err := fs.ReadDir(static, "static")
	if err != nil {
		panic("dashboard: " + err.Error()) // the embed is part of the binary
	}
	for _, e := range entries {
		b, err := static.ReadFile("static/" + e.Name())
		if err != nil {
			panic("dashboard: " + err.Error())
		}
		sum := sha256.Sum256(b)
		kind := mime.TypeByExtension(path.Ext(e.Name()))
		if kind == "" {
			kind = "application/octet-stream"
		}
		m[e.Name()] = file{body: b, kind: kind, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
	}
	return m
}

// Serve answers r with the dashboard file name ("index.html" for the page
// itself), and reports false, writing nothing, if there is no such file.
// Every answer carries the page's Content-Security-Policy.
func Serve(w http.ResponseWriter, r *http.Request, name string) bool {
	f, ok := files[name]
	if !ok {
		return false
	}
	h := w.Header()
	h.Set("Content-Security-Policy", Policy(r.Host))
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Content-Type", f.kind)
	// The files change only with the binary: revalidate each time, which
	// the ETag makes a 304.
	h.Set("Cache-Control", "no-cache")
	h.Set("ETag", f.etag)
	http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(f.body))
	return true
}

// Policy returns the Content-Security-Policy of the dashboard served to a
// browser that asked for host: scripts, styles, images and connections of
// the page's own origin only, so no inline script and nothing from another
// origin. connect-src names the WebSocket origins of host because browsers
// before CSP 3 do not count ws: and wss: as 'self'.
func Policy(host string) string {
	connect := "'self'"
	if validHost(host) {
		connect += " ws://" + host + " wss://" + host
	}
	return "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; " +
		"connect-src " + connect + "; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
}

// validHost reports whether host is a plain host[:port], safe to write into
// the policy: a Host header is the client's to choose, and one with a space
// or a ";" would add sources or directives of its own.
func validHost(host string) bool {
	if host == "" || len(host) > 255 {
		return false
	}
	return strings.IndexFunc(host, func(c rune) bool {
		return !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			c == '.' || c == '-' || c == ':' || c == '[' || c == ']')
	}) < 0
}
