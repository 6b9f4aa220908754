package dlmhttp_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dlmhq/dlm/dlmtest/testserver"
	dlmhttp "github.com/dlmhq/dlm/http"
)

// stall opens a connection to addr and sends the headers of an acquire with
// key and a body of 100 bytes, then one byte of it, then nothing.
func stall(addr, key string) (net.Conn, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	_, err = fmt.Fprintf(c, "POST /v1/locks/stalled/acquire HTTP/1.1\r\nHost: dlm\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{", key)
	if err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// answer reads the response on c, then waits for the server to close c. It
// fails if the server does neither within limit, which is far longer than
// either takes.
func answer(c net.Conn, limit time.Duration) (*http.Response, error) {
	c.SetReadDeadline(time.Now().Add(limit))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return nil, fmt.Errorf("no answer: %w", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
		return resp, fmt.Errorf("after the answer the connection stayed open: %v", err)
	}
	return resp, nil
}

// An answer given before the body was read (a bad key) is sent at once and
// the connection closed, however long the body timeout: net/http would
// otherwise wait to read the rest of the body first, which never comes.
func TestUnreadBodyAnsweredThenClosed(t *testing.T) {
	s := testserver.New(t, &testserver.Options{Handler: []dlmhttp.Option{dlmhttp.WithBodyTimeout(time.Hour)}})
	c, err := stall(s.HTTP.Addr().String(), "dlm_bad_key")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	resp, err := answer(c, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusUnauthorized || !resp.Close {
		t.Errorf("answer %d, Connection: %q; want 401 and close", resp.StatusCode, resp.Header.Get("Connection"))
	}
}

// A body that stops coming is given up at the body timeout: 400, and the
// connection closed.
func TestStalledBodyTimesOut(t *testing.T) {
	s := testserver.New(t, &testserver.Options{Handler: []dlmhttp.Option{dlmhttp.WithBodyTimeout(200 * time.Millisecond)}})
	c, err := stall(s.HTTP.Addr().String(), s.TenantKey)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	resp, err := answer(c, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusBadRequest || !resp.Close {
		t.Errorf("answer %d, Connection: %q; want 400 and close", resp.StatusCode, resp.Header.Get("Connection"))
	}
	// A blocking acquire whose body came in time may wait longer than
	// the body timeout: the deadline ends with the body.
	a := tenantAPI(t, s)
	lease := a.acquire("held", "h1", nil)
	done := make(chan *response, 1)
	go func() {
		done <- a.do("POST", "/v1/locks/held/acquire", map[string]any{"holder_id": "h2", "wait_ms": 30_000})
	}()
	dlmtestEventuallyWaiting(t, a, "held")
	time.Sleep(400 * time.Millisecond) // past the body timeout, on purpose: nothing signals it
	a.must(200, "DELETE", "/v1/leases/"+lease["lease_id"].(string), nil)
	if r := <-done; r.status != 200 {
		t.Errorf("blocking acquire past the body timeout = %d %s, want 200", r.status, r.body)
	}
}

// dlmtestEventuallyWaiting waits until name has a waiter.
func dlmtestEventuallyWaiting(t *testing.T, a *api, name string) {
	t.Helper()
	for range 2000 {
		v := a.must(200, "GET", "/v1/locks/"+name, nil)
		if w, _ := v["waiters"].([]any); len(w) > 0 {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("%s never had a waiter", name)
}

// stallMany opens n stalled connections, half with a bad key, and returns
// them; it fails the test if it cannot.
func stallMany(t *testing.T, addr string, n int, good string) []net.Conn {
	t.Helper()
	conns := make([]net.Conn, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for w := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 32 {
				key := good
				if i%2 == 1 {
					key = "dlm_bad_key"
				}
				c, err := stall(addr, key)
				if err != nil {
					errs <- err
					return
				}
				conns[i] = c
			}
		}()
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	})
	select {
	case err := <-errs:
		t.Fatalf("opening stalled connections: %v", err)
	default:
	}
	return conns
}

// Thousands of clients that send headers and stop in the middle of their
// body do not keep a valid client from being answered: the bad keys among
// them are answered and closed, the good ones wait for their body timeout
// (here longer than the test), and the valid client is answered meanwhile.
func TestThousandsOfStalledBodies(t *testing.T) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	lim.Cur = lim.Max // Go raises it at start on Linux; be sure
	syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	// Each stalled connection costs this process two descriptors, the
	// client's and the server's.
	n := min(3000, int(lim.Cur-500)/2)
	if n < 500 {
		t.Skipf("RLIMIT_NOFILE %d leaves room for %d connections only", lim.Cur, n)
	}
	s := testserver.New(t, &testserver.Options{Handler: []dlmhttp.Option{dlmhttp.WithBodyTimeout(time.Hour)}})
	conns := stallMany(t, s.HTTP.Addr().String(), n, s.TenantKey)
	t.Logf("%d stalled connections open", n)

	// Every bad key is answered (401, or 429 past the failed-auth limit)
	// and its connection closed.
	start := time.Now()
	var wg sync.WaitGroup
	failed := make(chan error, n)
	for i := 1; i < n; i += 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := answer(conns[i], time.Minute)
			// 401, or 429 once this address is past the failed-auth limit.
			if err == nil && resp.StatusCode != http.StatusUnauthorized && resp.StatusCode != http.StatusTooManyRequests {
				err = fmt.Errorf("answered %d", resp.StatusCode)
			}
			if err != nil {
				failed <- err
			}
		}()
	}
	// Meanwhile, and with the good keys' connections still stalled, a
	// valid client is answered.
	a := tenantAPI(t, s)
	lease := a.acquire("free", "valid", nil)
	a.must(200, "DELETE", "/v1/leases/"+lease["lease_id"].(string), nil)
	a.must(200, "GET", "/v1/locks/free", nil)
	t.Logf("a valid client was answered three times within %v", time.Since(start))
	wg.Wait()
	t.Logf("the %d bad keys were answered and closed within %v", n/2, time.Since(start))
	close(failed)
	bad := 0
	for err := range failed {
		if bad++; bad == 1 {
			t.Errorf("a stalled connection with a bad key: %v", err)
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d stalled connections with a bad key were not answered and closed", bad, n/2)
	}
}

// Past the connection cap, a new connection waits for a place rather than
// costing a descriptor, and gets one when a stalled connection is closed.
func TestConnectionCap(t *testing.T) {
	const capacity = 20
	s := testserver.New(t, &testserver.Options{Handler: []dlmhttp.Option{
		dlmhttp.WithMaxConnections(capacity), dlmhttp.WithBodyTimeout(300 * time.Millisecond)}})
	addr := s.HTTP.Addr().String()
	conns := make([]net.Conn, capacity)
	for i := range conns {
		c, err := stall(addr, s.TenantKey)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns[i] = c
	}
	// A fresh client (no kept-alive connection to reuse) is answered once
	// stalled connections have timed out and freed their places.
	fresh := &api{t, s.URL, s.TenantKey}
	old := httpClient
	httpClient = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{}}
	defer func() { httpClient = old }()
	fresh.must(200, "GET", "/v1/locks/capped", nil)
	// It was let in only after one of them was answered and closed: the
	// answers are already there to read.
	closed := 0
	for _, c := range conns {
		if _, err := answer(c, 5*time.Second); err == nil {
			closed++
		}
	}
	if closed == 0 {
		t.Errorf("none of the %d stalled connections was closed, yet a new one was served past the cap", capacity)
	}
}
