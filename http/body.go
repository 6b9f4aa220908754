package dlmhttp

import (
	"errors"
	"io"
	"net/http"
	"time"
)

// DefaultBodyTimeout is how long a client may take to send a request body,
// counted from when its headers were read (see WithBodyTimeout).
const DefaultBodyTimeout = 10 * time.Second

// WithBodyTimeout bounds the time a client may take to send a request body
// (at most 64 KiB), counted from when its headers were read: a client that
// trickles bytes, or stops, is answered 400 and its connection closed. It
// is a read deadline on the connection for as long as the body is being
// read, rather than http.Server.ReadTimeout, which would also end blocking
// acquires that legitimately take minutes. Default DefaultBodyTimeout.
func WithBodyTimeout(d time.Duration) Option {
	return func(h *Handler) { h.bodyTimeout = d }
}

// requestBody is a request's body that knows whether it was read to its end.
// A connection whose request body was not read to its end cannot carry
// another request, and reading the rest of it may take forever (a client
// that stalls): so the answer says "Connection: close" (see statusWriter),
// and once the handler returns, the connection's read deadline is brought
// forward to now, so that net/http, which reads what is left of a body
// before it closes the connection, gives up at once.
type requestBody struct {
	io.ReadCloser
	rc  *http.ResponseController
	eof bool
}

// bodyOf wraps r's body, if it has one, and puts a read deadline of
// timeout from now on the connection until it is read to its end.
func bodyOf(w http.ResponseWriter, r *http.Request, timeout time.Duration) (*http.Request, *requestBody) {
	if r.Body == nil || r.Body == http.NoBody {
		return r, nil
	}
	b := &requestBody{ReadCloser: r.Body, rc: http.NewResponseController(w)}
	_ = b.rc.SetReadDeadline(time.Now().Add(timeout)) // unsupported only on test recorders
	r = r.WithContext(r.Context())                    // a shallow copy: net/http keeps its own
	r.Body = b
	return r, b
}

func (b *requestBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if errors.Is(err, io.EOF) && !b.eof {
		b.eof = true
		// Read in time: lift the deadline, or it would end a blocking
		// acquire that waits longer (net/http reads on in the
		// background to notice a client that goes away).
		_ = b.rc.SetReadDeadline(time.Time{})
	}
	return n, err
}

// unread reports whether b is a body not read to its end.
func (b *requestBody) unread() bool { return b != nil && !b.eof }

// done is called when the handler has returned: a body left unread is
// given up at once (see requestBody).
func (b *requestBody) done(status int) {
	if b.unread() && status != http.StatusSwitchingProtocols {
		_ = b.rc.SetReadDeadline(time.Now())
	}
}
