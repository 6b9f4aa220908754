package dlmhttp_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/dlmhq/dlm/dlmtest"
	"github.com/dlmhq/dlm/dlmtest/testserver"
	"github.com/dlmhq/dlm/engine"
	"github.com/dlmhq/dlm/wire"
	"github.com/google/go-cmp/cmp"
)

// acquireRelease takes and gives back a lock through the API.
func (a *api) acquireRelease(name string) {
	a.t.Helper()
	l := a.must(200, "POST", "/v1/locks/"+name+"/acquire", map[string]any{"holder_id": "h"})
	a.must(200, "DELETE", "/v1/leases/"+l["lease_id"].(string), nil)
}

func TestEventHistory(t *testing.T) {
	s := testserver.New(t, nil)
	a := tenantAPI(t, s)
	l := a.must(200, "POST", "/v1/locks/jobs%2F1/acquire", map[string]any{"holder_id": "w1", "mode": "shared"})
	a.must(200, "POST", "/v1/leases/"+l["lease_id"].(string)+"/renew", nil)
	a.must(200, "DELETE", "/v1/leases/"+l["lease_id"].(string), nil)
	a.acquireRelease("other")

	r := a.must(200, "GET", "/v1/events?prefix=jobs/", nil)
	raw, _ := json.Marshal(r["events"])
	var events []wire.Event
	json.Unmarshal(raw, &events)
	var got []string
	for i, e := range events {
		got = append(got, fmt.Sprintf("%s %s %s %s %s %d", e.Type, e.Name, e.Scope, e.HolderID, e.Mode, e.FencingToken))
		at, _ := r["events"].([]any)[i].(map[string]any)["at"].(string)
		if _, err := time.Parse(time.RFC3339Nano, at); err != nil || e.ID <= 0 {
			t.Errorf("event %+v: bad id or time", e)
		}
	}
	tok := l["fencing_token"].(float64)
	want := []string{
		fmt.Sprintf("acquired jobs/1 tenant w1 shared %.0f", tok),
		fmt.Sprintf("renewed jobs/1 tenant w1 shared %.0f", tok),
		fmt.Sprintf("released jobs/1 tenant w1 shared %.0f", tok),
	}
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("events (-got +want):\n%s", diff)
	}
	if r["next_since"].(float64) != float64(events[len(events)-1].ID) {
		t.Errorf("next_since = %v, want the last id %d", r["next_since"], events[len(events)-1].ID)
	}
	// No lease ID anywhere in the log.
	for _, e := range r["events"].([]any) {
		if _, ok := e.(map[string]any)["lease_id"]; ok {
			t.Errorf("an event carries a lease_id: %v", e)
		}
	}
	// Paging: since is exclusive.
	page := a.must(200, "GET", fmt.Sprintf("/v1/events?since=%d&limit=1", events[0].ID), nil)
	if evs := page["events"].([]any); len(evs) != 1 || evs[0].(map[string]any)["type"] != "renewed" {
		t.Errorf("page after the first event = %v", evs)
	}
	empty := a.must(200, "GET", "/v1/events?name=never", nil)
	if evs, ok := empty["events"].([]any); !ok || len(evs) != 0 {
		t.Errorf("no events must be [], got %s", empty["events"])
	}
	for _, q := range []string{"since=-1", "since=x", "limit=0", "limit=5000", "scope=all", "name=bad%20name", "bogus=1"} {
		a.wantError(400, "invalid_argument", "GET", "/v1/events?"+q, nil)
	}
	adminAPI(t, s).wantError(400, "invalid_argument", "GET", "/v1/events", nil)
	if evs := adminAPI(t, s).must(200, "GET", "/v1/events?tenant=default", nil)["events"].([]any); len(evs) != 5 {
		t.Errorf("admin reading tenant default got %d events, want 5", len(evs))
	}
}

// dial opens a watch with key and the query q.
func dial(t testing.TB, s *testserver.Server, key, q string) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, s.URL+"/v1/watch?"+q, &websocket.DialOptions{
		HTTPHeader: http.Header{"Authorization": {"Bearer " + key}},
	})
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial /v1/watch?%s: %v (status %d)", q, err, status)
	}
	t.Cleanup(func() { c.CloseNow() })
	return c
}

// read reads n events from c.
func read(t testing.TB, c *websocket.Conn, n int) []wire.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out []wire.Event
	for len(out) < n {
		typ, msg, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("after %d of %d events: %v", len(out), n, err)
		}
		var e wire.Event
		if typ != websocket.MessageText || json.Unmarshal(msg, &e) != nil {
			t.Fatalf("not a JSON text event: %q", msg)
		}
		out = append(out, e)
	}
	return out
}

func names(events []wire.Event) []string {
	var ns []string
	for _, e := range events {
		ns = append(ns, e.Type+" "+e.Name)
	}
	return ns
}

func TestWatchFiltersByNameAndPrefix(t *testing.T) {
	s := testserver.New(t, nil)
	a := tenantAPI(t, s)
	byName := dial(t, s, s.TenantKey, "name=a%2F1")
	byPrefix := dial(t, s, s.TenantKey, "prefix=a/")
	a.acquireRelease("b%2F1")
	a.acquireRelease("a%2F1")
	a.acquireRelease("a%2F2")
	if diff := cmp.Diff(names(read(t, byName, 2)), []string{"acquired a/1", "released a/1"}); diff != "" {
		t.Errorf("by name (-got +want):\n%s", diff)
	}
	if diff := cmp.Diff(names(read(t, byPrefix, 4)), []string{"acquired a/1", "released a/1", "acquired a/2", "released a/2"}); diff != "" {
		t.Errorf("by prefix (-got +want):\n%s", diff)
	}
}

func TestWatchResumesAfterDisconnect(t *testing.T) {
	s := testserver.New(t, nil)
	a := tenantAPI(t, s)
	c := dial(t, s, s.TenantKey, "since=0")
	a.acquireRelease("r")
	seen := read(t, c, 2)
	c.Close(websocket.StatusNormalClosure, "")
	// While disconnected, more happens.
	a.acquireRelease("r")
	a.acquireRelease("s")
	c = dial(t, s, s.TenantKey, fmt.Sprintf("since=%d", seen[1].ID))
	missed := read(t, c, 4)
	if diff := cmp.Diff(names(missed), []string{"acquired r", "released r", "acquired s", "released s"}); diff != "" {
		t.Errorf("resumed (-got +want):\n%s", diff)
	}
	if missed[0].ID != seen[1].ID+1 {
		t.Errorf("first resumed id %d, want %d", missed[0].ID, seen[1].ID+1)
	}
}

// TestWatchSeamUnderConcurrentWrites connects watchers while writers run:
// each must see every event after its since exactly once and in order.
func TestWatchSeamUnderConcurrentWrites(t *testing.T) {
	s := testserver.New(t, nil)
	a := tenantAPI(t, s)
	a.acquireRelease("warm")
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 25 {
				l := a.do("POST", fmt.Sprintf("/v1/locks/seam%d/acquire", w), map[string]any{"holder_id": "h"})
				if l.status != 200 {
					t.Errorf("acquire: %d %s", l.status, l.body)
					return
				}
				a.do("DELETE", "/v1/leases/"+l.json(t)["lease_id"].(string), nil)
			}
		}()
	}
	var conns []*websocket.Conn
	for i := range 4 {
		conns = append(conns, dial(t, s, s.TenantKey, "since=0"))
		time.Sleep(time.Duration(i) * 10 * time.Millisecond) // connect at different moments of the load
	}
	wg.Wait()
	all := a.must(200, "GET", "/v1/events?limit=1000", nil)["events"].([]any)
	for i, c := range conns {
		got := read(t, c, len(all))
		for j, e := range got {
			if want := int64(all[j].(map[string]any)["id"].(float64)); e.ID != want {
				t.Fatalf("watcher %d, event %d: id %d, want %d", i, j, e.ID, want)
			}
		}
	}
}

func TestWatchIsolationAndAuth(t *testing.T) {
	s := testserver.New(t, nil)
	admin := adminAPI(t, s)
	other := admin.must(201, "POST", "/v1/tenants", map[string]any{"name": "globex"})
	globex := &api{t, s.URL, other["api_key"].(string)}
	mine := dial(t, s, s.TenantKey, "")
	theirs := dial(t, s, globex.key, "")
	globex.acquireRelease("secret")
	tenantAPI(t, s).acquireRelease("mine")
	globex.must(200, "POST", "/v1/locks/shared/acquire", map[string]any{"holder_id": "g", "scope": "global"})
	if diff := cmp.Diff(names(read(t, mine, 3)), []string{"acquired mine", "released mine", "acquired shared"}); diff != "" {
		t.Errorf("default tenant saw (-got +want):\n%s", diff)
	}
	if diff := cmp.Diff(names(read(t, theirs, 3)), []string{"acquired secret", "released secret", "acquired shared"}); diff != "" {
		t.Errorf("globex saw (-got +want):\n%s", diff)
	}
	if evs := tenantAPI(t, s).must(200, "GET", "/v1/events", nil)["events"].([]any); len(evs) != 3 {
		t.Errorf("default tenant's history has %d events, want 3 (its own and the global one)", len(evs))
	}

	// No key, a bad key: refused before the upgrade.
	for _, hdr := range []http.Header{nil, {"Authorization": {"Bearer nope"}}} {
		_, resp, err := websocket.Dial(t.Context(), s.URL+"/v1/watch", &websocket.DialOptions{HTTPHeader: hdr})
		if err == nil || resp == nil || resp.StatusCode != 401 {
			t.Errorf("watch with header %v: %v, %v; want 401", hdr, err, resp)
		}
	}
	// Browsers send the key as a subprotocol.
	c, _, err := websocket.Dial(t.Context(), s.URL+"/v1/watch", &websocket.DialOptions{
		Subprotocols: []string{"dlm.v1", "bearer." + s.TenantKey},
	})
	if err != nil {
		t.Fatalf("watch with the bearer subprotocol: %v", err)
	}
	defer c.CloseNow()
	if c.Subprotocol() != "dlm.v1" {
		t.Errorf("subprotocol = %q, want dlm.v1", c.Subprotocol())
	}
}

func TestWatchCompacted(t *testing.T) {
	s := testserver.New(t, &testserver.Options{Engine: engine.Options{EventRetentionCount: 2}})
	a := tenantAPI(t, s)
	for range 3 {
		a.acquireRelease("c")
	}
	// Pruning runs in the background; wait until the oldest events are gone.
	deadline := time.Now().Add(20 * time.Second)
	for {
		evs := a.must(200, "GET", "/v1/events", nil)["events"].([]any)
		if len(evs) <= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("events were not pruned: %d left", len(evs))
		}
		s.Engine.Prune(t.Context())
	}
	c := dial(t, s, s.TenantKey, "since=1")
	_, _, err := c.Read(t.Context())
	var ce websocket.CloseError
	if !errors.As(err, &ce) || ce.Reason != "compacted" {
		t.Fatalf("read after a compacted since: %v, want close reason compacted", err)
	}
}

// TestSlowWatcherDoesNotSlowLocks: a watcher that never reads, on sockets
// with tiny buffers, is cut off while 1,000 acquire/release cycles on other
// names complete; the cycles take about as long as without it.
func TestSlowWatcherDoesNotSlowLocks(t *testing.T) {
	s := smallBufferServer(t, 64)
	a := tenantAPI(t, s)
	cycles := func() time.Duration {
		start := time.Now()
		var wg sync.WaitGroup
		for w := range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; i < 1000; i += 16 {
					a.acquireRelease(fmt.Sprint("cycle", i))
				}
			}()
		}
		wg.Wait()
		return time.Since(start)
	}
	baseline := cycles()
	slow := dialSmallReceiveBuffer(t, s)
	stuck := cycles()
	// Not an assertion: a busy machine varies more than this ratio.
	t.Logf("1000 cycles: %v alone, %v with a stuck watcher", baseline, stuck)
	// The watcher was cut off: reading drains what the sockets held and
	// ends, with close code 4002 when the close frame got through (a write
	// stuck for writeTimeout ends the connection without one), before all
	// 2,000 events arrived.
	got, err := readUntilEnd(t, slow)
	var ce websocket.CloseError
	if got >= 2000 || (errors.As(err, &ce) && ce.Code != 4002) {
		t.Fatalf("stuck watcher read %d events, then %v; want it cut off", got, err)
	}
	t.Logf("stuck watcher got %d events before being cut off (%v)", got, err)
}

// TestSlowWatcherGetsCloseCode: a watcher that stops reading is dropped by
// the engine while the server's write to it is stuck; once it reads again
// it gets what the sockets held, then close code 4002 with the code
// slow_consumer in its reason, not a bare EOF.
func TestSlowWatcherGetsCloseCode(t *testing.T) {
	s := smallBufferServer(t, 16)
	a := tenantAPI(t, s)
	slow := dialSmallReceiveBuffer(t, s)
	for i := 0; s.Engine.Watchers() > 0; i++ {
		if i == 5000 {
			t.Fatal("5000 acquire/release cycles and the watcher that does not read is still watching")
		}
		a.acquireRelease("burst")
	}
	got, err := readUntilEnd(t, slow)
	var ce websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != 4002 || !strings.HasPrefix(ce.Reason, "slow_consumer") {
		t.Fatalf("dropped watcher read %d events, then %v; want close code 4002, reason slow_consumer", got, err)
	}
}

// smallBufferServer starts a server whose connections have small send
// buffers and whose watchers may fall watchBuffer events behind.
func smallBufferServer(t *testing.T, watchBuffer int) *testserver.Server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return testserver.New(t, &testserver.Options{Engine: engine.Options{WatchBuffer: watchBuffer}, Listener: dlmtest.SmallSendBuffers(ln)})
}

// dialSmallReceiveBuffer opens a watch of every event on a connection with
// a small receive buffer. The server has registered the watch when it
// returns: it does so before it answers the upgrade.
func dialSmallReceiveBuffer(t *testing.T, s *testserver.Server) *websocket.Conn {
	t.Helper()
	c, _, err := websocket.Dial(t.Context(), s.URL+"/v1/watch", &websocket.DialOptions{
		HTTPHeader: http.Header{"Authorization": {"Bearer " + s.TenantKey}},
		HTTPClient: &http.Client{Transport: &http.Transport{DialContext: dlmtest.DialSmallReceiveBuffer}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.CloseNow() })
	return c
}

// readUntilEnd reads c until it ends, within 30 s, and returns how many
// messages it read and the error that ended it.
func readUntilEnd(t *testing.T, c *websocket.Conn) (int, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	for n := 0; ; n++ {
		if _, _, err := c.Read(ctx); err != nil {
			if ctx.Err() != nil {
				t.Fatalf("still reading after 30s (%d messages)", n)
			}
			return n, err
		}
	}
}
