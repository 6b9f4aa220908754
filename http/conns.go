package dlmhttp

import (
	"context"
	"net"
	"net/http"
	"sync"
	"time"
)

// DefaultMaxConnections is how many connections a Server serves at once
// unless WithMaxConnections says otherwise.
const DefaultMaxConnections = 10_000

// WithMaxConnections caps the connections a Server has open at once (n <= 0:
// no cap). Past the cap it accepts no more until one closes: new connections
// wait in the kernel's listen queue instead of each taking a file descriptor
// and a goroutine, so that a flood of clients that connect and stall slows
// down newcomers but never runs the process out of descriptors, which
// would fail everyone ("accept: too many open files"). Stalled connections
// are closed by the header and body timeouts, which frees their places.
// Default DefaultMaxConnections.
func WithMaxConnections(n int) Option {
	return func(h *Handler) { h.maxConns = n }
}

// servingListener hands out servedConns and, if slots is not nil, accepts a
// connection only while fewer than cap(slots) that it accepted are open.
type servingListener struct {
	net.Listener
	slots     chan struct{}
	closed    chan struct{}
	closeOnce sync.Once
}

func serving(ln net.Listener, maxConns int) net.Listener {
	l := &servingListener{Listener: ln, closed: make(chan struct{})}
	if maxConns > 0 {
		l.slots = make(chan struct{}, maxConns)
	}
	return l
}

func (l *servingListener) Accept() (net.Conn, error) {
	if l.slots != nil {
		select {
		case l.slots <- struct{}{}:
		case <-l.closed:
			return nil, net.ErrClosed
		}
	}
	c, err := l.Listener.Accept()
	if err != nil {
		l.free()
		return nil, err
	}
	return &servedConn{Conn: c, free: l.free}, nil
}

func (l *servingListener) free() {
	if l.slots != nil {
		<-l.slots
	}
}

func (l *servingListener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

// servedConn gives its place back when it is first closed, and lets a
// watch write many WebSocket frames at once (writeFrames).
type servedConn struct {
	net.Conn
	closeOnce sync.Once
	free      func()
	mu        sync.Mutex // one Write at a time, so frames never interleave
}

func (c *servedConn) Close() error {
	err := c.Conn.Close()
	c.closeOnce.Do(c.free)
	return err
}

func (c *servedConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.Conn.Write(b)
}

// writeFrames writes b, whole WebSocket frames, in one write within
// timeout. The WebSocket library writes each of its frames (pings, the
// close) in one Write as well, and Write takes turns with writeFrames, so
// no frame is cut into by another.
func (c *servedConn) writeFrames(b []byte, timeout time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.Conn.SetWriteDeadline(time.Now().Add(timeout))
	_, err := c.Conn.Write(b)
	c.Conn.SetWriteDeadline(time.Time{})
	return err
}

type connKey struct{}

// connContext puts the served connection into its requests' contexts.
func connContext(ctx context.Context, c net.Conn) context.Context {
	if sc, ok := c.(*servedConn); ok {
		return context.WithValue(ctx, connKey{}, sc)
	}
	return ctx
}

// servedConnOf returns the connection r came on, if a Server serves it.
func servedConnOf(r *http.Request) *servedConn {
	sc, _ := r.Context().Value(connKey{}).(*servedConn)
	return sc
}
