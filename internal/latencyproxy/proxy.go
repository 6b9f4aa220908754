// Package latencyproxy is a TCP proxy that holds every byte back for a fixed
// time in each direction, as a network link with that latency would. The
// benchmarks use it to put a chosen round trip between dlm instances and
// PostgreSQL on one machine, where loopback has next to none.
//
// Bytes are delayed by their arrival time, not by pausing the copy: each
// direction of a connection has a reader that stamps what it reads and a
// writer that sends it once its time has come, so that a stream keeps its
// throughput and its byte order, and connections never wait for each other.
//
// The proxy also counts round trips (RoundTrips), which is what a latency
// costs: a benchmark reports them per operation.
package latencyproxy

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Proxy forwards the connections it accepts to one target address.
type Proxy struct {
	ln     net.Listener
	target string
	delay  time.Duration
	trips  atomic.Int64

	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[net.Conn]struct{} // open on either side; nil once closed
}

// Start listens on addr ("127.0.0.1:0" for any free port) and forwards every
// connection to target, each byte delivered delay after it arrived, in both
// directions: a round trip through the proxy takes 2*delay longer.
func Start(addr, target string, delay time.Duration) (*Proxy, error) {
	if delay < 0 {
		return nil, errors.New("latencyproxy: negative delay")
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, target: target, delay: delay, conns: map[net.Conn]struct{}{}}
	p.wg.Go(p.accept)
	return p, nil
}

// Addr is the address the proxy listens on, as host:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// RoundTrips is how many times, over all connections so far, a client sent
// something after the server had last spoken (or first): each such turn
// waits out a round trip. A pipelined exchange (many requests written before
// the answers are read) counts once, as it costs one.
func (p *Proxy) RoundTrips() int64 { return p.trips.Load() }

// Close stops accepting, cuts every open connection and returns once they
// are all gone.
func (p *Proxy) Close() error {
	err := p.ln.Close()
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.conns = nil
	p.mu.Unlock()
	p.wg.Wait()
	return err
}

func (p *Proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.wg.Go(func() { p.serve(c) })
	}
}

// track records c as open, or closes it if the proxy is closed.
func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conns == nil {
		c.Close()
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *Proxy) untrack(cs ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range cs {
		c.Close()
		delete(p.conns, c)
	}
}

// serve connects client to the target and forwards both ways until both
// are done.
func (p *Proxy) serve(client net.Conn) {
	if !p.track(client) {
		return
	}
	server, err := net.Dial("tcp", p.target)
	if err != nil || !p.track(server) {
		p.untrack(client)
		return
	}
	// answered is whether the server spoke since the client's last turn.
	var answered atomic.Bool
	answered.Store(true)
	var wg sync.WaitGroup
	wg.Go(func() {
		p.forward(server, client, func() {
			if answered.Swap(false) {
				p.trips.Add(1)
			}
		})
	})
	wg.Go(func() { p.forward(client, server, func() { answered.Store(true) }) })
	wg.Wait()
	p.untrack(client, server)
}

// chunk is what one read got, and when it may go on.
type chunk struct {
	b   []byte
	due time.Time
}

// queued bounds the chunks in flight in one direction. Reads of a busy
// stream fill chunks of up to readSize, so this is megabytes per delay.
const (
	queued   = 1024
	readSize = 32 << 10
)

// forward copies src to dst, every chunk held back until delay after it was
// read; read is called as each chunk arrives. When src ends cleanly dst is closed for writing, and the other
// direction goes on, as TCP's half-close lets it; any other end, of either
// side, closes both connections, which ends the other direction too.
func (p *Proxy) forward(dst, src net.Conn, read func()) {
	chunks := make(chan chunk, queued)
	var readErr error
	go func() {
		defer close(chunks)
		buf := make([]byte, readSize)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				read()
				chunks <- chunk{append([]byte(nil), buf[:n]...), time.Now().Add(p.delay)}
			}
			if err != nil {
				readErr = err
				return
			}
		}
	}()
	for c := range chunks {
		time.Sleep(time.Until(c.due))
		if _, err := dst.Write(c.b); err != nil {
			dst.Close()
			src.Close() // ends the reader
			for range chunks {
			}
			return
		}
	}
	if cw, ok := dst.(interface{ CloseWrite() error }); ok && errors.Is(readErr, io.EOF) {
		cw.CloseWrite()
		return
	}
	dst.Close()
	src.Close()
}
