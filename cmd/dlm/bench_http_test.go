package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// rawServer answers each request on a connection with the next of
// responses, verbatim, and counts the connections it accepted.
func rawServer(t *testing.T, responses ...string) (addr string, conns *atomic.Int32, requests chan string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	conns = new(atomic.Int32)
	requests = make(chan string, len(responses))
	var next atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					body, _ := io.ReadAll(req.Body)
					requests <- fmt.Sprintf("%s %s auth=%q body=%s", req.Method, req.URL.Path, req.Header.Get("Authorization"), body)
					i := int(next.Add(1) - 1)
					if i >= len(responses) {
						return
					}
					io.WriteString(c, responses[i])
					if strings.HasPrefix(responses[i], "HTTP/1.0") || strings.Contains(responses[i], "Connection: close") {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String(), conns, requests
}

func TestBenchConn(t *testing.T) {
	addr, conns, requests := rawServer(t,
		"HTTP/1.1 200 OK\r\nContent-Length: 17\r\nContent-Type: application/json\r\n\r\n{\"lease_id\":\"ab\"}",
		"HTTP/1.1 409 Conflict\r\ntransfer-encoding: chunked\r\n\r\n5;ext=1\r\n{\"err\r\nC\r\nor\":{\"code\":\r\n11\r\n\"lock_conflict\"}}\r\n0\r\nX-Trailer: 1\r\n\r\n",
		"HTTP/1.1 204 No Content\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
		"HTTP/1.0 200 OK\r\n\r\nto the end",
		"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nnew",
	)
	target, err := newBenchTarget("http://"+addr+"/base/", "k1", "")
	if err != nil {
		t.Fatal(err)
	}
	c := newBenchConn(target)
	defer c.close()
	for i, want := range []struct {
		status int
		body   string
	}{
		{200, `{"lease_id":"ab"}`},
		{409, `{"error":{"code":"lock_conflict"}}`},
		{204, ``},
		{200, `{}`},
		{200, `to the end`},
		{200, `new`},
	} {
		var body []byte
		if i == 0 {
			body = []byte(`{"holder_id":"x"}`)
		}
		st, resp, err := c.do("POST", []byte(fmt.Sprintf("/v1/%d", i)), body, 5*time.Second)
		if err != nil || st != want.status || string(resp) != want.body {
			t.Errorf("response %d: %d %q %v; want %d %q", i, st, resp, err, want.status, want.body)
		}
		if got := <-requests; !strings.HasPrefix(got, fmt.Sprintf(`POST /base/v1/%d auth="Bearer k1" body=%s`, i, body)) {
			t.Errorf("request %d arrived as %s", i, got)
		}
	}
	// One connection for the first four, one after Connection: close, one
	// after the HTTP/1.0 body that ran to the end of its connection.
	if n := conns.Load(); n != 3 {
		t.Errorf("%d connections, want 3", n)
	}
	if _, _, err := c.do("GET", []byte("/"), nil, 5*time.Second); err == nil {
		t.Error("no error from a connection the server closed without answering")
	}
}

func TestJSONField(t *testing.T) {
	body := []byte(`{"name":"lease_id", "lease_id" : "0a1b","fencing_token":-17,"error":{"code":"lease_ended"}}`)
	for key, want := range map[string]string{`"lease_id"`: "0a1b", `"fencing_token"`: "-17", `"code"`: "lease_ended", `"nope"`: ""} {
		if got := string(jsonField(body, key)); got != want {
			t.Errorf("jsonField(%s) = %q, want %q", key, got, want)
		}
	}
	if got := errorCode(502, []byte("bad gateway"), nil); got != "http_502" {
		t.Errorf("errorCode without a code = %q", got)
	}
}

func TestMetricsStats(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/metrics" {
			http.NotFound(w, r)
			return
		}
		// Big enough to be sent chunked.
		fmt.Fprintf(w, "# HELP x\n%sprocess_cpu_seconds_total 12.5\nprocess_resident_memory_bytes 2.5e+07\n", strings.Repeat("# padding\n", 1000))
	}))
	defer srv.Close()
	target, _ := newBenchTarget(srv.URL, "k", "")
	s := readServerStats(target, 0)
	if s.rss != 25e6 || s.cpu != 12.5 || s.source != "/metrics process_resident_memory_bytes" {
		t.Errorf("stats from /metrics: %+v", s)
	}
	none, _ := newBenchTarget(srv.URL+"/nothing", "k", "")
	if s := readServerStats(none, 0); s.source != "" {
		t.Errorf("stats without /metrics or a pid: %+v", s)
	}
}

// The bench's own HTTP client against net/http's, on the same server: the
// difference is CPU the bench would take from a server on the same machine.
//
//	go test -run XXX -bench 'Client' -benchmem ./cmd/dlm/
func BenchmarkBenchConnClient(b *testing.B) {
	srv := leaseServer(b)
	target, _ := newBenchTarget(srv.URL, "k", "")
	c := newBenchConn(target)
	defer c.close()
	path, body := []byte("/v1/locks/a/acquire"), []byte(`{"holder_id":"bench"}`)
	b.ReportAllocs()
	for b.Loop() {
		st, resp, err := c.do("POST", path, body, time.Minute)
		if err != nil || st != 200 || len(jsonField(resp, `"lease_id"`)) == 0 {
			b.Fatal(st, err)
		}
	}
}

func BenchmarkNetHTTPClient(b *testing.B) {
	srv := leaseServer(b)
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}}
	defer hc.CloseIdleConnections()
	body := []byte(`{"holder_id":"bench"}`)
	b.ReportAllocs()
	for b.Loop() {
		req, _ := http.NewRequest("POST", srv.URL+"/v1/locks/a/acquire", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer k")
		req.Header.Set("Content-Type", "application/json")
		resp, err := hc.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		var l struct {
			LeaseID string `json:"lease_id"`
		}
		err = json.NewDecoder(resp.Body).Decode(&l)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || l.LeaseID == "" {
			b.Fatal(resp.StatusCode, err)
		}
	}
}

// leaseServer answers every request with a lease object.
func leaseServer(b *testing.B) *httptest.Server {
	lease := []byte(`{"lease_id":"06bdk5sgd0r5fb6l3fq8cgjbk7pcprd3n7ac","name":"a","scope":"tenant","mode":"exclusive","holder_id":"bench","fencing_token":17,"ttl_ms":30000,"acquired_at":"2026-11-26T10:00:00.123456789Z","expires_at":"2026-11-26T10:00:30.123456789Z"}`)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Write(lease)
	}))
	b.Cleanup(srv.Close)
	return srv
}
