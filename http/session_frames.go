package dlmhttp

import (
	"bufio"
	"encoding/binary"
	"net"
	"net/http"
	"sync"
	"time"
)

// frameWriter hands the WebSocket library a connection that the session
// can also write whole frames to when it hijacks the request's: the
// library writes one message per call and a system call per message, while
// a session writes every reply and push that is ready in one write.
type frameWriter struct {
	http.ResponseWriter
	conn *frameConn
}

func (w *frameWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	w.conn = &frameConn{Conn: c}
	return w.conn, bufio.NewReadWriter(brw.Reader, bufio.NewWriterSize(w.conn, 8<<10)), nil
}

func (w *frameWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// frameConn is a net.Conn on which the library's writes (each of its
// frames, pings, pongs and the close, in one Write from its buffer) take
// turns with writeFrames, so that no frame is cut into by another.
type frameConn struct {
	net.Conn
	mu sync.Mutex // one write at a time
	// deadline is the write deadline set last. It is moved only once less
	// than 9/10 of a timeout is left, not around every write: a write that
	// does not finish within 0.9–1 timeout fails.
	deadline time.Time
}

func (c *frameConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.extendDeadline(writeTimeout)
	return c.Conn.Write(p)
}

// writeFrames writes b, whole frames, in one write that must finish within
// timeout.
func (c *frameConn) writeFrames(b []byte, timeout time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.extendDeadline(timeout)
	_, err := c.Conn.Write(b)
	return err
}

// extendDeadline makes the write deadline about timeout from now; c.mu is
// held.
func (c *frameConn) extendDeadline(timeout time.Duration) {
	if now := time.Now(); c.deadline.Sub(now) < timeout*9/10 {
		c.deadline = now.Add(timeout)
		c.Conn.SetWriteDeadline(c.deadline)
	}
}

// appendTextFrame appends msg as one unmasked, unfragmented text frame
// (RFC 6455 §5.2), as a server sends it.
func appendTextFrame(b, msg []byte) []byte {
	b = append(b, 0x81) // FIN, text
	switch n := len(msg); {
	case n < 126:
		b = append(b, byte(n))
	case n <= 0xffff:
		b = append(b, 126, byte(n>>8), byte(n))
	default:
		b = append(b, 127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	return append(b, msg...)
}
