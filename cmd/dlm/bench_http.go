package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/dlmhq/dlm/client"
)

// The load generator speaks HTTP/1.1 itself, over one kept-alive connection
// per bench client, with requests written from reused buffers and bodies
// encoded once. It shares the machine with the server, so its cost per
// request matters: net/http's client costs several times more CPU per
// request (a Request, a Response, headers maps, a goroutine hand-off per
// call, JSON decoding), which would be CPU taken from the server. It does
// only what the dlm API needs: Content-Length and chunked bodies, keep-alive,
// Connection: close, http and https.

// benchTarget is where the bench sends requests.
type benchTarget struct {
	addr     string // host:port to dial
	host     string // Host header
	basePath string // path prefix of the API, "" or e.g. "/dlm"
	tls      *tls.Config
	auth     string // "Authorization: Bearer KEY\r\n"
}

// newBenchTarget returns the target at rawURL; for https, the server's
// certificate must chain to the system's roots or to the PEM file caCert.
func newBenchTarget(rawURL, key, caCert string) (*benchTarget, error) {
	u, err := url.Parse(strings.TrimRight(rawURL, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, usagef("--url %q: want http://host:port or https://host:port", rawURL)
	}
	t := &benchTarget{host: u.Host, basePath: u.EscapedPath(), auth: "Authorization: Bearer " + key + "\r\n"}
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	t.addr = net.JoinHostPort(u.Hostname(), port)
	if u.Scheme == "https" {
		t.tls = &tls.Config{ServerName: u.Hostname()}
		if caCert != "" {
			if t.tls.RootCAs, err = client.CertPool(caCert); err != nil {
				return nil, err
			}
		}
	}
	return t, nil
}

// benchConn is one client's connection. It reconnects on the next request
// after an error; it never retries a request.
type benchConn struct {
	t    *benchTarget
	c    net.Conn
	br   *bufio.Reader
	req  []byte // the request being written
	body []byte // the last response's body, valid until the next request
}

func newBenchConn(t *benchTarget) *benchConn {
	return &benchConn{t: t, req: make([]byte, 0, 512), body: make([]byte, 0, 1024)}
}

// netError is a failure below HTTP: connect, write, read or a malformed
// response. The connection is closed and the request may or may not have
// taken effect.
type netError struct{ err error }

func (e *netError) Error() string { return e.err.Error() }
func (e *netError) Unwrap() error { return e.err }

// do sends one request and reads its response. path is the part after the
// base path, escaped; body, if not nil, is sent as JSON. timeout bounds the
// whole exchange. The returned body is valid until the next call.
func (c *benchConn) do(method string, path []byte, body []byte, timeout time.Duration) (status int, resp []byte, err error) {
	if c.c == nil {
		if err := c.dial(timeout); err != nil {
			return 0, nil, &netError{err}
		}
	}
	c.c.SetDeadline(time.Now().Add(timeout))
	r := append(c.req[:0], method...)
	r = append(r, ' ')
	r = append(r, c.t.basePath...)
	r = append(r, path...)
	r = append(r, " HTTP/1.1\r\nHost: "...)
	r = append(r, c.t.host...)
	r = append(r, "\r\n"...)
	r = append(r, c.t.auth...)
	if body != nil {
		r = append(r, "Content-Type: application/json\r\nContent-Length: "...)
		r = strconv.AppendInt(r, int64(len(body)), 10)
		r = append(r, "\r\n"...)
	}
	r = append(r, "\r\n"...)
	r = append(r, body...)
	c.req = r
	if _, err := c.c.Write(r); err != nil {
		c.close()
		return 0, nil, &netError{err}
	}
	status, keep, err := c.readResponse(method)
	if err != nil {
		c.close()
		return 0, nil, &netError{err}
	}
	if !keep {
		c.close()
	}
	return status, c.body, nil
}

func (c *benchConn) dial(timeout time.Duration) error {
	d := net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}
	conn, err := d.Dial("tcp", c.t.addr)
	if err != nil {
		return err
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	if c.t.tls != nil {
		tc := tls.Client(conn, c.t.tls)
		tc.SetDeadline(time.Now().Add(timeout))
		if err := tc.Handshake(); err != nil {
			conn.Close()
			return err
		}
		conn = tc
	}
	c.c = conn
	if c.br == nil {
		c.br = bufio.NewReaderSize(conn, 16<<10)
	} else {
		c.br.Reset(conn)
	}
	return nil
}

func (c *benchConn) close() {
	if c.c != nil {
		c.c.Close()
		c.c = nil
	}
}

var errBadResponse = errors.New("malformed HTTP response")

// readResponse reads a response into c.body. keep says whether the
// connection may be used again.
func (c *benchConn) readResponse(method string) (status int, keep bool, err error) {
	line, err := c.br.ReadSlice('\n')
	if err != nil {
		return 0, false, err
	}
	// "HTTP/1.1 200 OK\r\n"
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
		return 0, false, errBadResponse
	}
	for _, d := range line[9:12] {
		if d < '0' || d > '9' {
			return 0, false, errBadResponse
		}
		status = status*10 + int(d-'0')
	}
	keep = line[7] == '1' // HTTP/1.1 keeps the connection by default
	length, chunked := -1, false
	for {
		line, err := c.br.ReadSlice('\n')
		if err != nil {
			return 0, false, err
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			break
		}
		k, v, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			return 0, false, errBadResponse
		}
		v = bytes.TrimSpace(v)
		switch {
		case bytes.EqualFold(k, []byte("Content-Length")):
			if length, err = strconv.Atoi(string(v)); err != nil || length < 0 {
				return 0, false, errBadResponse
			}
		case bytes.EqualFold(k, []byte("Transfer-Encoding")):
			chunked = bytes.EqualFold(v, []byte("chunked"))
		case bytes.EqualFold(k, []byte("Connection")):
			if bytes.EqualFold(v, []byte("close")) {
				keep = false
			} else if bytes.EqualFold(v, []byte("keep-alive")) {
				keep = true
			}
		}
	}
	c.body = c.body[:0]
	switch {
	case method == "HEAD" || status == 204 || status == 304 || status < 200:
	case chunked:
		err = c.readChunked()
	case length >= 0:
		c.body = grow(c.body, length)
		_, err = io.ReadFull(c.br, c.body)
	default: // the body runs to the end of the connection
		keep = false
		var b bytes.Buffer
		_, err = b.ReadFrom(c.br)
		c.body = append(c.body, b.Bytes()...)
	}
	return status, keep, err
}

func (c *benchConn) readChunked() error {
	for {
		line, err := c.br.ReadSlice('\n')
		if err != nil {
			return err
		}
		line = bytes.TrimRight(line, "\r\n")
		if i := bytes.IndexByte(line, ';'); i >= 0 {
			line = line[:i]
		}
		n, err := strconv.ParseUint(string(bytes.TrimSpace(line)), 16, 31)
		if err != nil {
			return errBadResponse
		}
		if n == 0 {
			break
		}
		start := len(c.body)
		c.body = grow(c.body, start+int(n))
		if _, err := io.ReadFull(c.br, c.body[start:]); err != nil {
			return err
		}
		if _, err := c.br.Discard(2); err != nil { // CRLF
			return err
		}
	}
	for { // trailers, up to the blank line
		line, err := c.br.ReadSlice('\n')
		if err != nil {
			return err
		}
		if len(bytes.TrimRight(line, "\r\n")) == 0 {
			return nil
		}
	}
}

// grow returns b resized to n bytes, keeping its contents.
func grow(b []byte, n int) []byte {
	if cap(b) >= n {
		return b[:n]
	}
	nb := make([]byte, n, max(n, 2*cap(b)))
	copy(nb, b)
	return nb
}

// jsonField returns the raw value of the first key (given quoted, as
// `"code"`) in a JSON object: a string's contents without quotes (the API's
// IDs and codes need no escapes), or a number's digits. It is a scan, not a
// parser: the bench reads a handful of known fields from the server's own
// answers, and a full decode per request would cost more than the rest of
// the request.
func jsonField(body []byte, key string) []byte {
	for off := 0; ; {
		i := bytes.Index(body[off:], []byte(key))
		if i < 0 {
			return nil
		}
		j := off + i + len(key)
		off = j
		for j < len(body) && isJSONSpace(body[j]) {
			j++
		}
		if j >= len(body) || body[j] != ':' {
			continue // a value that happened to equal the key
		}
		j++
		for j < len(body) && isJSONSpace(body[j]) {
			j++
		}
		if j < len(body) && body[j] == '"' {
			end := bytes.IndexByte(body[j+1:], '"')
			if end < 0 {
				return nil
			}
			return body[j+1 : j+1+end]
		}
		end := j
		for end < len(body) && (body[end] == '-' || body[end] >= '0' && body[end] <= '9') {
			end++
		}
		return body[j:end]
	}
}

func isJSONSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// errorCode names a failed request for the report: the API's error code, or
// "http_NNN" if the answer has none, or "network" for a failure below HTTP.
func errorCode(status int, body []byte, err error) string {
	if err != nil {
		return "network"
	}
	if code := jsonField(body, `"code"`); len(code) > 0 {
		return string(code)
	}
	return fmt.Sprintf("http_%d", status)
}
