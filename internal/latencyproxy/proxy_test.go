package latencyproxy_test

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/dlmhq/dlm/internal/latencyproxy"
)

// echoServer answers every connection with what it receives, and closes its
// side when the client has closed its own.
func echoServer(t testing.TB) string {
	return serve(t, func(c net.Conn) { io.Copy(c, c) })
}

// serve runs handle on every connection to a new listener until the test
// ends, and returns the listener's address.
func serve(t testing.TB, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				handle(c)
			})
		}
	})
	return ln.Addr().String()
}

func start(t testing.TB, target string, delay time.Duration) *latencyproxy.Proxy {
	t.Helper()
	p, err := latencyproxy.Start("127.0.0.1:0", target, delay)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// dial connects through p, with a deadline that turns a hang into a
// failure.
func dial(t testing.TB, p *latencyproxy.Proxy) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	t.Cleanup(func() { c.Close() })
	return c
}

// roundTrip sends msg on c and reads the echo back.
func roundTrip(c net.Conn, msg []byte) error {
	if _, err := c.Write(msg); err != nil {
		return err
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	if !bytes.Equal(got, msg) {
		return fmt.Errorf("echo %q, want %q", got, msg)
	}
	return nil
}

// TestDelay: a round trip through the proxy takes at least twice its
// one-way delay, every time, on a fresh connection and on one in use.
func TestDelay(t *testing.T) {
	const delay = 25 * time.Millisecond
	p := start(t, echoServer(t), delay)
	c := dial(t, p)
	for i := range 3 {
		start := time.Now()
		if err := roundTrip(c, []byte(fmt.Sprint("ping ", i))); err != nil {
			t.Fatal(err)
		}
		if took := time.Since(start); took < 2*delay {
			t.Errorf("round trip %d took %v, less than 2 × %v", i, took, delay)
		}
	}
}

// TestBytesIntact: megabytes written in writes of every size while the
// echo streams back arrive whole and in order, and the half-close of the
// writer reaches the server, whose close comes back.
func TestBytesIntact(t *testing.T) {
	p := start(t, echoServer(t), 2*time.Millisecond)
	c := dial(t, p)
	data := make([]byte, 4<<20)
	rand.Read(data)
	sent := make(chan error, 1)
	go func() {
		sizes := []int{1, 7, 100, 1500, 4096, 65536, 100_000}
		rest := data
		for i := 0; len(rest) > 0; i++ {
			w := min(sizes[i%len(sizes)], len(rest))
			if _, err := c.Write(rest[:w]); err != nil {
				sent <- err
				return
			}
			rest = rest[w:]
		}
		sent <- c.(*net.TCPConn).CloseWrite()
	}()
	got, err := io.ReadAll(c) // until the server's close
	if err != nil {
		t.Fatal(err)
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("got %d bytes back, want the %d sent, unchanged", len(got), len(data))
	}
}

// TestConnectionsConcurrent: many connections are open through the proxy at
// once, and the last one opened is answered while none of the others has
// sent anything; then they all talk at once. A proxy that served its
// connections one after another would hang here.
func TestConnectionsConcurrent(t *testing.T) {
	const n = 64
	p := start(t, echoServer(t), 5*time.Millisecond)
	conns := make([]net.Conn, n)
	for i := range conns {
		conns[i] = dial(t, p)
	}
	if err := roundTrip(conns[n-1], []byte("last first")); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i, c := range conns {
		wg.Go(func() {
			msg := bytes.Repeat([]byte{byte(i)}, 64<<10+i)
			for range 4 {
				if err := roundTrip(c, msg); err != nil {
					errs <- fmt.Errorf("connection %d: %w", i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestClose cuts the connections that are open.
func TestClose(t *testing.T) {
	p, err := latencyproxy.Start("127.0.0.1:0", echoServer(t), time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, p)
	if err := roundTrip(c, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Error("a connection still answers after Close")
	}
	if c, err := net.Dial("tcp", p.Addr()); err == nil {
		c.Close()
		t.Error("the proxy still accepts after Close")
	}
}

// BenchmarkThroughput streams through a proxy with a 1 ms delay each way:
// the delay must not cap a stream's throughput.
func BenchmarkThroughput(b *testing.B) {
	p := start(b, echoServer(b), time.Millisecond)
	c := dial(b, p)
	buf := make([]byte, 256<<10)
	b.SetBytes(int64(len(buf)))
	go func() {
		for range b.N {
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	}()
	if _, err := io.CopyN(io.Discard, c, int64(b.N)*int64(len(buf))); err != nil {
		b.Fatal(err)
	}
}

// requestServer answers every 4-byte request read whole with the same 4
// bytes: it speaks only once a request is complete.
func requestServer(t testing.TB) string {
	return serve(t, func(c net.Conn) {
		req := make([]byte, 4)
		for {
			if _, err := io.ReadFull(c, req); err != nil {
				return
			}
			if _, err := c.Write(req); err != nil {
				return
			}
		}
	})
}

// TestRoundTrips: a request answered before the next is sent counts once,
// though it came in two writes that the proxy read apart; three requests
// written at once and then answered count once too.
func TestRoundTrips(t *testing.T) {
	p := start(t, requestServer(t), time.Millisecond)
	c := dial(t, p)
	for range 3 {
		if _, err := c.Write([]byte("ab")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond) // the proxy reads the half alone
		if _, err := c.Write([]byte("cd")); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, 4)
		if _, err := io.ReadFull(c, got); err != nil || string(got) != "abcd" {
			t.Fatalf("answer %q, %v; want abcd", got, err)
		}
	}
	if err := roundTrip(c, []byte("abcdabcdabcd")); err != nil {
		t.Fatal(err)
	}
	if got := p.RoundTrips(); got != 4 {
		t.Errorf("RoundTrips = %d after 3 exchanges and a pipeline of 3 requests, want 4", got)
	}
}
