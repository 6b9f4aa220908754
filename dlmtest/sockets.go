package dlmtest

import (
	"context"
	"errors"
	"net"
	"syscall"
)

// tinyBuffer is the socket buffer size of SmallSendBuffers and
// DialSmallReceiveBuffer: small enough that writes to a peer that does not
// read stall after a few kilobytes.
const tinyBuffer = 4096

// SmallSendBuffers wraps ln so that every connection it accepts has a 4 KiB
// send buffer: a server's writes to a peer that does not read stall quickly.
func SmallSendBuffers(ln net.Listener) net.Listener { return smallSendBuffers{ln} }

type smallSendBuffers struct{ net.Listener }

func (l smallSendBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		err = c.(*net.TCPConn).SetWriteBuffer(tinyBuffer)
	}
	return c, err
}

// DialSmallReceiveBuffer dials with a 4 KiB receive buffer, for an
// http.Transport's DialContext: a client that does not read stalls the
// server's writes quickly.
func DialSmallReceiveBuffer(ctx context.Context, network, addr string) (net.Conn, error) {
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, tinyBuffer)
		})
		return errors.Join(err, serr)
	}}
	return d.DialContext(ctx, network, addr)
}
