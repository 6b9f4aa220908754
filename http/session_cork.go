package dlmhttp

import (
	"bufio"
	"net"
	"net/http"
	"sync"
	"time"
)

// corkWriter hands the WebSocket library a connection that can be corked
// when it hijacks the request's: the library flushes every message on its
// own, and a session wants the replies that are ready together to leave in
// one write to the socket.
type corkWriter struct {
	http.ResponseWriter
	conn *corkConn
}

func (w *corkWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	w.conn = &corkConn{Conn: c}
	return w.conn, bufio.NewReadWriter(brw.Reader, bufio.NewWriterSize(w.conn, 8<<10)), nil
}

func (w *corkWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// corkConn is a net.Conn whose writes are held back between corkUp and
// flush.
type corkConn struct {
	net.Conn
	mu     sync.Mutex // serializes writes to Conn, guards the rest
	corked bool
	buf    []byte
}

func (c *corkConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.corked {
		c.buf = append(c.buf, p...)
		return len(p), nil
	}
	return c.Conn.Write(p)
}

// corkUp holds writes back until flush.
func (c *corkConn) corkUp() {
	c.mu.Lock()
	c.corked = true
	c.mu.Unlock()
}

// flush writes what was held back in one write, which must finish within
// timeout, and stops holding writes back.
func (c *corkConn) flush(timeout time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.corked = false
	if len(c.buf) == 0 {
		return nil
	}
	c.Conn.SetWriteDeadline(time.Now().Add(timeout))
	_, err := c.Conn.Write(c.buf)
	c.Conn.SetWriteDeadline(time.Time{})
	if cap(c.buf) > 1<<20 {
		c.buf = nil // a burst's buffer is not kept for the session's life
	} else {
		c.buf = c.buf[:0]
	}
	return err
}
