package dlmhttp

import (
	"net"
	"sync"
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

// limitedListener accepts a connection only while fewer than cap(slots) that it
// accepted are open.
type limitedListener struct {
	net.Listener
	slots     chan struct{}
	closed    chan struct{}
	closeOnce sync.Once
}

func limitListener(ln net.Listener, n int) net.Listener {
	return &limitedListener{Listener: ln, slots: make(chan struct{}, n), closed: make(chan struct{})}
}

func (l *limitedListener) Accept() (net.Conn, error) {
	select {
	case l.slots <- struct{}{}:
	case <-l.closed:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.slots
		return nil, err
	}
	return &limitedConn{Conn: c, free: func() { <-l.slots }}, nil
}

func (l *limitedListener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

// limitedConn gives its place back when it is first closed.
type limitedConn struct {
	net.Conn
	once sync.Once
	free func()
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.free)
	return err
}
