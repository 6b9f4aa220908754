package linearize_test

// Fuzz targets for the WebSocket watch: its handshake (query string and the
// Sec-WebSocket-Protocol header, which may carry the API key) and what a
// client sends after it (the watch reads nothing: data must be refused with
// a policy-violation close, never crash or stall the server).

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/dlmtest/testserver"
	"github.com/dlmhq/dlm/engine"
)

func newWatchServer(f *testing.F) *testserver.Server {
	s := testserver.New(f, nil)
	ctx := context.Background()
	for _, n := range []string{"w/1", "w/2"} {
		if _, _, err := s.Engine.Acquire(ctx, engine.AcquireRequest{Tenant: "default", Key: dlm.Key{Namespace: "default", Name: n}, HolderID: "fuzz", TTL: time.Hour}); err != nil {
			f.Fatal(err)
		}
	}
	return s
}

func FuzzWatchHandshake(f *testing.F) {
	for _, seed := range []struct {
		query, protocol string
		inProtocol      bool
	}{
		{"", "", false}, {"since=0", "dlm.v1", false}, {"since=0", "dlm.v1", true}, {"name=w/1&since=0", "", true},
		{"prefix=w/", "dlm.v1, chat", false}, {"since=-1", "", false}, {"scope=nope", "dlm.v1", true},
		{"since=0", ",,,", true}, {"tenant=default", "bearer.", false}, {"", "bearer.wrong", false},
		{"since=1&since=2", "dlm.v1", false}, {"limit=1", "", false}, {"since=0", "dlm.v1,bearer.x, bearer.y", false},
	} {
		f.Add(seed.query, seed.protocol, seed.inProtocol)
	}
	s := newWatchServer(f)
	addr := strings.TrimPrefix(s.URL, "http://")
	f.Fuzz(func(t *testing.T, raw, protocol string, inProtocol bool) {
		if strings.ContainsAny(raw, "#\x00\r\n ") || strings.ContainsAny(protocol, "\x00\r\n") {
			return // not something a request line or header can carry
		}
		target := "/v1/watch?" + raw
		if _, err := url.ParseRequestURI(target); err != nil {
			return
		}
		offered := protocol
		if inProtocol {
			offered = strings.TrimPrefix(protocol+", bearer."+s.TenantKey, ", ")
		}
		var req strings.Builder
		fmt.Fprintf(&req, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n", target, addr)
		req.WriteString("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n")
		if !inProtocol {
			fmt.Fprintf(&req, "Authorization: Bearer %s\r\n", s.TenantKey)
		}
		if offered != "" {
			fmt.Fprintf(&req, "Sec-WebSocket-Protocol: %s\r\n", offered)
		}
		req.WriteString("\r\n")
		conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := conn.Write([]byte(req.String())); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("GET %s (protocol %q): no HTTP answer: %v", target, offered, err)
		}
		defer resp.Body.Close()
		switch {
		case resp.StatusCode >= 500:
			t.Fatalf("GET %s (protocol %q): %s", target, offered, resp.Status)
		case resp.StatusCode == http.StatusSwitchingProtocols:
			chosen := resp.Header.Get("Sec-WebSocket-Protocol")
			if chosen == "" {
				return
			}
			for _, p := range strings.Split(offered, ",") {
				if strings.TrimSpace(p) == chosen {
					if strings.HasPrefix(chosen, "bearer.") {
						t.Fatalf("GET %s: the server echoed the API key as the subprotocol", target)
					}
					return
				}
			}
			t.Fatalf("GET %s: subprotocol %q chosen, not among those offered (%q)", target, chosen, offered)
		default:
			var e struct {
				Error struct{ Code, Message string } `json:"error"`
			}
			if err := json.NewDecoder(resp.Body).Decode(&e); err != nil || e.Error.Code == "" {
				// net/http itself refuses some malformed requests with
				// plain text before any handler; only 400 may do so.
				if resp.StatusCode != 400 {
					t.Fatalf("GET %s (protocol %q): %s without an error object", target, offered, resp.Status)
				}
			}
		}
	})
}

func FuzzWatchInput(f *testing.F) {
	f.Add([]byte("hello"), false, 0)
	f.Add([]byte{}, false, 0)
	f.Add([]byte{0xff, 0x00, 0x81}, true, 1)
	f.Add([]byte(`{"since":0}`), false, 2)
	f.Add(make([]byte, 70000), true, 0)
	s := newWatchServer(f)
	wsURL := "ws" + strings.TrimPrefix(s.URL, "http") + "/v1/watch?since=0"
	f.Fuzz(func(t *testing.T, msg []byte, binary bool, pings int) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		h := http.Header{"Authorization": {"Bearer " + s.TenantKey}}
		conn, _, err := websocket.Dial(ctx, wsURL, &websocket.DialOptions{HTTPHeader: h, Subprotocols: []string{"dlm.v1"}})
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		defer conn.CloseNow()
		conn.SetReadLimit(1 << 20)
		// The backlog comes first: at least the two grants.
		for range 2 {
			typ, b, err := conn.Read(ctx)
			if err != nil {
				t.Fatalf("reading the backlog: %v", err)
			}
			var e struct {
				ID   int64  `json:"id"`
				Type string `json:"type"`
			}
			if typ != websocket.MessageText || json.Unmarshal(b, &e) != nil || e.ID == 0 || e.Type == "" {
				t.Fatalf("backlog message %q is not an event", b)
			}
		}
		// A reader runs from here on: pongs are read by it.
		ended := make(chan error, 1)
		go func() {
			for {
				if _, _, err := conn.Read(ctx); err != nil {
					ended <- err
					return
				}
			}
		}()
		// Control frames are answered and change nothing.
		for range pings % 3 {
			pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
			err := conn.Ping(pctx)
			pcancel()
			if err != nil {
				t.Fatalf("ping: %v", err)
			}
		}
		typ := websocket.MessageText
		if binary {
			typ = websocket.MessageBinary
		}
		if err := conn.Write(ctx, typ, msg); err != nil {
			return // the server may already be closing
		}
		// The watch reads nothing: any data ends it with a policy violation.
		err = <-ended
		if st := websocket.CloseStatus(err); st != websocket.StatusPolicyViolation && st != websocket.StatusMessageTooBig {
			if errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("the server neither refused the client's %d-byte message nor closed within 10s", len(msg))
			}
			t.Fatalf("after a %d-byte data message: %v (close status %v), want a policy-violation close", len(msg), err, st)
		}
	})
}
