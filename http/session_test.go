package dlmhttp_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/dlmhq/dlm/dlmtest"
	"github.com/dlmhq/dlm/dlmtest/testserver"
	"github.com/jackc/pgx/v5"
)

func TestMain(m *testing.M) {
	if os.Getenv("DLM_SESSION_HELPER") != "" {
		sessionHelper()
		return
	}
	dlmtest.Main(m)
}

// backend is where a session test runs: one server on SQLite, or several
// instances of a cluster on one PostgreSQL schema.
type backend struct {
	urls                []string
	tenantKey, adminKey string
}

// other returns the instance after i, so that a test acts on one instance
// and sees the effect on another.
func (b *backend) other(i int) string { return b.urls[(i+1)%len(b.urls)] }

// backends runs f on SQLite and on three PostgreSQL instances.
func backends(t *testing.T, f func(t *testing.T, b *backend)) {
	t.Run("sqlite", func(t *testing.T) {
		s := testserver.New(t, nil)
		f(t, &backend{urls: []string{s.URL}, tenantKey: s.TenantKey, adminKey: s.AdminKey})
	})
	t.Run("postgres", func(t *testing.T) {
		f(t, postgresCluster(t, 3))
	})
}

// postgresCluster starts n dlm serve processes on a fresh schema.
func postgresCluster(t testing.TB, n int) *backend {
	base := dlmtest.PostgresURL(t)
	schema := "dlmtest_" + strings.ToLower(rand.Text()[:10])
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn, err := pgx.Connect(ctx, base)
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close(ctx)
		conn.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE")
	})
	u, _ := url.Parse(base)
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	b := &backend{}
	var first string
	for i := range n {
		s := dlmtest.MustServe(t, dlmtest.ServeOptions{Args: []string{"--postgres", u.String()}, Env: []string{"DLM_POSTGRES_URL="}})
		b.urls = append(b.urls, s.URL)
		if i == 0 {
			first = s.Dir
		}
	}
	creds := dlmtest.Credentials(t, first)
	b.tenantKey, b.adminKey = creds.TenantKey, creds.AdminKey
	return b
}

// sess is a test's end of a session: it sends requests and sorts what
// arrives into replies by id and pushes.
type sess struct {
	t      testing.TB
	c      *websocket.Conn
	mu     sync.Mutex
	nextID int64
	// arrived is every message in the order it came; replies by id.
	replies map[int64]chan map[string]any
	pushes  chan map[string]any
	order   []int64 // ids of replies in arrival order
	closed  chan struct{}
	err     error // why reading stopped, once closed is closed
}

func dialSession(t testing.TB, base, key string) *sess {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, base+"/v1/session", &websocket.DialOptions{
		HTTPHeader: http.Header{"Authorization": {"Bearer " + key}},
	})
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial /v1/session: %v (status %d)", err, status)
	}
	c.SetReadLimit(-1)
	s := &sess{t: t, c: c, replies: map[int64]chan map[string]any{}, pushes: make(chan map[string]any, 10000), closed: make(chan struct{})}
	t.Cleanup(func() { c.CloseNow() })
	go s.read()
	return s
}

func (s *sess) read() {
	defer close(s.closed)
	for {
		_, msg, err := s.c.Read(context.Background())
		if err != nil {
			s.err = err
			return
		}
		var m map[string]any
		if err := json.Unmarshal(msg, &m); err != nil {
			s.err = fmt.Errorf("not JSON: %q", msg)
			return
		}
		id, ok := m["id"].(float64)
		if !ok {
			s.pushes <- m
			continue
		}
		s.mu.Lock()
		s.order = append(s.order, int64(id))
		ch := s.chanLocked(int64(id))
		s.mu.Unlock()
		ch <- m
	}
}

func (s *sess) chanLocked(id int64) chan map[string]any {
	if s.replies[id] == nil {
		s.replies[id] = make(chan map[string]any, 2)
	}
	return s.replies[id]
}

// send sends a request with a fresh id and returns the id.
func (s *sess) send(op string, fields map[string]any) int64 {
	s.t.Helper()
	s.mu.Lock()
	s.nextID++
	id := s.nextID
	s.chanLocked(id)
	s.mu.Unlock()
	m := map[string]any{"id": id, "op": op}
	for k, v := range fields {
		m[k] = v
	}
	b, _ := json.Marshal(m)
	s.raw(string(b))
	return id
}

// raw sends msg as it is.
func (s *sess) raw(msg string) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
		s.t.Fatalf("send: %v", err)
	}
}

// wait returns the reply to id.
func (s *sess) wait(id int64) map[string]any {
	s.t.Helper()
	s.mu.Lock()
	ch := s.chanLocked(id)
	s.mu.Unlock()
	select {
	case m := <-ch:
		return m
	case <-s.closed:
		s.t.Fatalf("session ended before the reply to %d: %v", id, s.err)
	case <-time.After(30 * time.Second):
		s.t.Fatalf("no reply to %d", id)
	}
	return nil
}

// call sends a request and returns its result, failing on an error reply.
func (s *sess) call(op string, fields map[string]any) map[string]any {
	s.t.Helper()
	r := s.wait(s.send(op, fields))
	res, ok := r["result"].(map[string]any)
	if !ok {
		s.t.Fatalf("%s %v: %v", op, fields, r)
	}
	return res
}

// fail sends a request and returns its error code, failing on a result.
func (s *sess) fail(op string, fields map[string]any) string {
	s.t.Helper()
	return errCode(s.t, s.wait(s.send(op, fields)))
}

func errCode(t testing.TB, r map[string]any) string {
	t.Helper()
	e, ok := r["error"].(map[string]any)
	if !ok || e["message"] == "" {
		t.Fatalf("want an error reply, got %v", r)
	}
	return e["code"].(string)
}

// push returns the next push.
func (s *sess) push() map[string]any {
	s.t.Helper()
	select {
	case m := <-s.pushes:
		return m
	case <-s.closed:
		s.t.Fatalf("session ended before a push: %v", s.err)
	case <-time.After(30 * time.Second):
		s.t.Fatal("no push")
	}
	return nil
}

// leaseEnded returns the next push, which must be lease_ended.
func (s *sess) leaseEnded() map[string]any {
	s.t.Helper()
	p := s.push()
	le, ok := p["lease_ended"].(map[string]any)
	if !ok {
		s.t.Fatalf("want lease_ended, got %v", p)
	}
	return le
}

// noPush checks that nothing was pushed so far, after a round trip that
// comes after anything the server would have pushed.
func (s *sess) noPush() {
	s.t.Helper()
	select {
	case m := <-s.pushes:
		s.t.Fatalf("unexpected push %v", m)
	default:
	}
}

func TestSessionAuth(t *testing.T) {
	srv := testserver.New(t, nil)
	for _, tc := range []struct {
		name string
		hdr  http.Header
		opts []string
		want int
	}{
		{"no key", nil, nil, 401},
		{"bad key", http.Header{"Authorization": {"Bearer nope"}}, nil, 401},
		{"admin key", http.Header{"Authorization": {"Bearer " + srv.AdminKey}}, nil, 403},
		{"subprotocol", nil, []string{"dlm.v1", "bearer." + srv.TenantKey}, 101},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		c, resp, err := websocket.Dial(ctx, srv.URL+"/v1/session", &websocket.DialOptions{HTTPHeader: tc.hdr, Subprotocols: tc.opts})
		cancel()
		if resp == nil || resp.StatusCode != tc.want {
			t.Errorf("%s: %v, %v; want %d", tc.name, resp, err, tc.want)
		}
		if c != nil {
			c.CloseNow()
		}
	}
}

func TestSessionOperations(t *testing.T) {
	backends(t, func(t *testing.T, b *backend) {
		s := dialSession(t, b.urls[0], b.tenantKey)
		l := s.call("acquire", map[string]any{"name": "ops/1", "holder_id": "h", "ttl_ms": 60000})
		id := l["lease_id"].(string)
		if !grantToken(t, l, 0) || l["name"] != "ops/1" || l["scope"] != "tenant" {
			t.Errorf("lease %v", l)
		}
		if g := s.call("get", map[string]any{"lease_id": id}); g["lease_id"] != id {
			t.Errorf("get %v", g)
		}
		v := s.call("inspect", map[string]any{"name": "ops/1"})
		if hs := v["holders"].([]any); len(hs) != 1 || hs[0].(map[string]any)["lease_id"] != nil {
			t.Errorf("inspect %v", v)
		}
		if code := s.fail("acquire", map[string]any{"name": "ops/1", "holder_id": "x"}); code != "lock_conflict" {
			t.Errorf("conflict: %s", code)
		}
		d := s.call("acquire", map[string]any{"name": "ops/1", "holder_id": "x", "dry_run": true})
		if d["would_grant"] != false {
			t.Errorf("dry run %v", d)
		}
		// Idempotency as on HTTP, across connections and across HTTP.
		first := s.call("acquire", map[string]any{"name": "ops/2", "holder_id": "h", "idempotency_key": "k1"})
		again := dialSession(t, b.other(0), b.tenantKey).call("acquire", map[string]any{"name": "ops/2", "holder_id": "h", "idempotency_key": "k1"})
		if again["lease_id"] != first["lease_id"] || again["replayed"] != true {
			t.Errorf("replay %v after %v", again, first)
		}
		viaHTTP := (&api{t, b.other(0), b.tenantKey}).acquire("ops%2F2", "h", map[string]any{"idempotency_key": "k1"})
		if viaHTTP["lease_id"] != first["lease_id"] {
			t.Errorf("HTTP replay %v", viaHTTP)
		}
		if code := s.fail("acquire", map[string]any{"name": "ops/3", "holder_id": "h", "idempotency_key": "k1"}); code != "idempotency_key_reused" {
			t.Errorf("reused key: %s", code)
		}
		if r := s.call("release", map[string]any{"lease_id": id}); r["lease_id"] != id {
			t.Errorf("release %v", r)
		}
		if code := s.fail("get", map[string]any{"lease_id": id}); code != "lease_ended" {
			t.Errorf("get after release: %s", code)
		}
		if code := s.fail("release", map[string]any{"lease_id": "nope"}); code != "not_found" {
			t.Errorf("release unknown: %s", code)
		}
		s.noPush() // its own release is not pushed
	})
}

// TestSessionCompletionOrder: a queued acquire holds up nothing sent after
// it, and its reply comes when it is granted.
func TestSessionCompletionOrder(t *testing.T) {
	backends(t, func(t *testing.T, b *backend) {
		holder := dialSession(t, b.other(0), b.tenantKey)
		l := holder.call("acquire", map[string]any{"name": "order", "holder_id": "first"})
		s := dialSession(t, b.urls[0], b.tenantKey)
		queued := s.send("acquire", map[string]any{"name": "order", "holder_id": "second", "wait_ms": 60000})
		w := holder.push()["waiting"].(map[string]any)
		if w["lease_id"] != l["lease_id"] || w["holder_id"] != "second" || w["mode"] != "exclusive" {
			t.Errorf("waiting push %v", w)
		}
		get := s.send("inspect", map[string]any{"name": "order"})
		if v := s.wait(get)["result"].(map[string]any); len(v["waiters"].([]any)) != 1 {
			t.Errorf("inspect while queued: %v", v)
		}
		holder.call("release", map[string]any{"lease_id": l["lease_id"]})
		granted := s.wait(queued)["result"].(map[string]any)
		if granted["holder_id"] != "second" || !grantToken(t, granted, l["fencing_token"]) {
			t.Errorf("granted %v", granted)
		}
		s.mu.Lock()
		order := append([]int64(nil), s.order...)
		s.mu.Unlock()
		if len(order) != 2 || order[0] != get || order[1] != queued {
			t.Errorf("replies in order %v, want [%d %d]", order, get, queued)
		}
	})
}

// TestSessionLeaseEnded: every end other than the session's own release is
// pushed, by whichever instance ends the lease.
func TestSessionLeaseEnded(t *testing.T) {
	backends(t, func(t *testing.T, b *backend) {
		s := dialSession(t, b.urls[0], b.tenantKey)
		admin := &api{t, b.other(0), b.adminKey}
		other := &api{t, b.other(0), b.tenantKey}

		l := s.call("acquire", map[string]any{"name": "end/force", "holder_id": "h"})
		admin.must(200, "POST", "/v1/locks/end%2Fforce/force-release?tenant=default", nil)
		if le := s.leaseEnded(); le["lease_id"] != l["lease_id"] || le["reason"] != "force_released" || le["name"] != "end/force" || le["fencing_token"] != l["fencing_token"] {
			t.Errorf("force-release push %v for %v", le, l)
		}

		l = s.call("acquire", map[string]any{"name": "end/expire", "holder_id": "h", "ttl_ms": 200})
		if le := s.leaseEnded(); le["lease_id"] != l["lease_id"] || le["reason"] != "expired" {
			t.Errorf("expiry push %v", le)
		}

		l = s.call("acquire", map[string]any{"name": "end/elsewhere", "holder_id": "h"})
		other.must(200, "DELETE", "/v1/leases/"+l["lease_id"].(string), nil)
		if le := s.leaseEnded(); le["lease_id"] != l["lease_id"] || le["reason"] != "released" {
			t.Errorf("release elsewhere push %v", le)
		}

		// Its own release is not pushed: the next push is the next end.
		l = s.call("acquire", map[string]any{"name": "end/own", "holder_id": "h"})
		s.call("release", map[string]any{"lease_id": l["lease_id"]})
		l = s.call("acquire", map[string]any{"name": "end/after", "holder_id": "h"})
		admin.must(200, "POST", "/v1/locks/end%2Fafter/force-release?tenant=default", nil)
		if le := s.leaseEnded(); le["lease_id"] != l["lease_id"] {
			t.Errorf("after its own release, push %v, want the end of %v", le, l["lease_id"])
		}
		// Another session's lease on the same name is not pushed here.
		dialSession(t, b.other(0), b.tenantKey).call("acquire", map[string]any{"name": "end/after", "holder_id": "x", "ttl_ms": 100})
		l = s.call("acquire", map[string]any{"name": "end/after", "holder_id": "h", "wait_ms": 60000})
		admin.must(200, "POST", "/v1/locks/end%2Fafter/force-release?tenant=default", nil)
		if le := s.leaseEnded(); le["lease_id"] != l["lease_id"] {
			t.Errorf("push %v, want only the end of its own %v", le, l["lease_id"])
		}
	})
}

func TestSessionRenewMany(t *testing.T) {
	backends(t, func(t *testing.T, b *backend) {
		n := 1000
		if len(b.urls) > 1 {
			n = 200 // PostgreSQL commits take longer; the shape is the same
		}
		s := dialSession(t, b.urls[0], b.tenantKey)
		ids := make([]int64, n)
		for i := range n {
			ids[i] = s.send("acquire", map[string]any{"name": fmt.Sprintf("many/%d", i), "holder_id": "h", "ttl_ms": 5000})
		}
		leases := make([]any, 0, n+2)
		expires := map[string]string{}
		for _, id := range ids {
			l := s.wait(id)["result"].(map[string]any)
			leases = append(leases, l["lease_id"])
			expires[l["lease_id"].(string)] = l["expires_at"].(string)
		}
		ended := s.call("acquire", map[string]any{"name": "many/ended", "holder_id": "h"})["lease_id"]
		s.call("release", map[string]any{"lease_id": ended})
		if n < 1000 {
			leases = append(leases, "unknown", ended)
		} else {
			leases = append(leases[:n-2], "unknown", ended)
		}
		res := s.call("renew", map[string]any{"lease_ids": leases, "ttl_ms": 60000})["leases"].([]any)
		if len(res) != len(leases) {
			t.Fatalf("%d results for %d ids", len(res), len(leases))
		}
		for i, r := range res[:len(res)-2] {
			l := r.(map[string]any)
			if l["lease_id"] != leases[i] || l["ttl_ms"].(float64) != 60000 || l["expires_at"].(string) <= expires[l["lease_id"].(string)] {
				t.Fatalf("result %d: %v", i, l)
			}
		}
		for i, want := range []string{"not_found", "lease_ended"} {
			r := res[len(res)-2+i].(map[string]any)
			if r["lease_id"] != leases[len(leases)-2+i] || r["error"].(map[string]any)["code"] != want {
				t.Errorf("result for %v: %v, want %s", leases[len(leases)-2+i], r, want)
			}
		}
		tooMany := make([]string, 1001)
		for i := range tooMany {
			tooMany[i] = "x"
		}
		for _, bad := range []any{tooMany, []string{}, "x", nil} {
			if code := s.fail("renew", map[string]any{"lease_ids": bad}); code != "invalid_argument" {
				t.Errorf("renew %v: %s", bad, code)
			}
		}
	})
}

func TestSessionCancel(t *testing.T) {
	backends(t, func(t *testing.T, b *backend) {
		a := &api{t, b.other(0), b.tenantKey}
		a.acquire("cancel", "holder", nil)
		s := dialSession(t, b.urls[0], b.tenantKey)
		queued := s.send("acquire", map[string]any{"name": "cancel", "holder_id": "w", "wait_ms": 60000})
		dlmtest.Eventually(t, "the acquire is queued", func() bool {
			return len(a.must(200, "GET", "/v1/locks/cancel", nil)["waiters"].([]any)) == 1
		})
		if r := s.call("cancel", map[string]any{"target": queued}); len(r) != 0 {
			t.Errorf("cancel result %v, want {}", r)
		}
		if code := errCode(t, s.wait(queued)); code != "cancelled" {
			t.Errorf("cancelled acquire: %s", code)
		}
		if w := a.must(200, "GET", "/v1/locks/cancel", nil)["waiters"].([]any); len(w) != 0 {
			t.Errorf("waiters after cancel: %v", w)
		}
		if code := s.fail("cancel", map[string]any{"target": queued}); code != "not_found" {
			t.Errorf("cancel of a finished request: %s", code)
		}
	})
}

func TestSessionReleaseOnClose(t *testing.T) {
	backends(t, func(t *testing.T, b *backend) {
		a := &api{t, b.other(0), b.tenantKey}
		a.acquire("roc/busy", "holder", nil)
		s := dialSession(t, b.urls[0], b.tenantKey)
		s.call("acquire", map[string]any{"name": "roc/leader", "holder_id": "h", "release_on_close": true})
		kept := s.call("acquire", map[string]any{"name": "roc/kept", "holder_id": "h"})
		s.send("acquire", map[string]any{"name": "roc/busy", "holder_id": "h", "wait_ms": 60000})
		dlmtest.Eventually(t, "the acquire is queued", func() bool {
			return len(a.must(200, "GET", "/v1/locks/roc%2Fbusy", nil)["waiters"].([]any)) == 1
		})
		s.c.Close(websocket.StatusNormalClosure, "")
		dlmtest.Eventually(t, "the release_on_close lease is released", func() bool {
			return len(a.must(200, "GET", "/v1/locks/roc%2Fleader", nil)["holders"].([]any)) == 0
		})
		dlmtest.Eventually(t, "the queued acquire is withdrawn", func() bool {
			return len(a.must(200, "GET", "/v1/locks/roc%2Fbusy", nil)["waiters"].([]any)) == 0
		})
		a.must(200, "GET", "/v1/leases/"+kept["lease_id"].(string), nil) // outlives its connection
	})
}

// TestSessionReleaseOnCloseKilledClient: a client process killed with
// SIGKILL never closes its session; its socket's end does.
func TestSessionReleaseOnCloseKilledClient(t *testing.T) {
	backends(t, func(t *testing.T, b *backend) {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "DLM_SESSION_HELPER="+b.urls[0], "DLM_SESSION_KEY="+b.tenantKey)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer cmd.Wait()
		line := make([]byte, 4096)
		n, err := out.Read(line)
		if err != nil || !strings.HasPrefix(string(line[:n]), "held ") {
			cmd.Process.Kill()
			t.Fatalf("helper: %q %v", line[:n], err)
		}
		a := &api{t, b.other(0), b.tenantKey}
		if h := a.must(200, "GET", "/v1/locks/killed", nil)["holders"].([]any); len(h) != 1 {
			t.Fatalf("holders before the kill: %v", h)
		}
		cmd.Process.Kill()
		dlmtest.Eventually(t, "the killed client's lease is released", func() bool {
			return len(a.must(200, "GET", "/v1/locks/killed", nil)["holders"].([]any)) == 0
		})
	})
}

// sessionHelper is the client process of TestSessionReleaseOnCloseKilledClient:
// it takes a lock with release_on_close, says so, and waits to be killed.
func sessionHelper() {
	ctx := context.Background()
	c, _, err := websocket.Dial(ctx, os.Getenv("DLM_SESSION_HELPER")+"/v1/session", &websocket.DialOptions{
		HTTPHeader: http.Header{"Authorization": {"Bearer " + os.Getenv("DLM_SESSION_KEY")}},
	})
	if err != nil {
		fmt.Println("dial:", err)
		os.Exit(1)
	}
	c.Write(ctx, websocket.MessageText, []byte(`{"id":1,"op":"acquire","name":"killed","holder_id":"k","release_on_close":true,"ttl_ms":600000}`))
	_, msg, err := c.Read(ctx)
	if err != nil || !strings.Contains(string(msg), `"lease_id"`) {
		fmt.Println("acquire:", string(msg), err)
		os.Exit(1)
	}
	fmt.Println("held", string(msg))
	c.Read(ctx) // until killed
	os.Exit(0)
}

func TestSessionBadInput(t *testing.T) {
	srv := testserver.New(t, nil)
	s := dialSession(t, srv.URL, srv.TenantKey)
	for _, tc := range []struct {
		msg   string
		id    float64
		field string
	}{
		{`not json`, 0, "message"},
		{`[1]`, 0, "message"},
		{`{"op":"get"}`, 0, "id"},
		{`{"id":"7","op":"get"}`, 0, "id"},
		{`{"id":-1,"op":"get"}`, 0, "id"},
		{`{"id":1.5,"op":"get"}`, 0, "id"},
		{`{"id":8,"op":"nope"}`, 8, "op"},
		{`{"id":9}`, 9, "op"},
		{`{"id":10,"op":"get","lease_id":"x","extra":1}`, 10, "extra"},
		{`{"id":11,"op":"get","lease_id":"x","lease_id":"y"}`, 11, "lease_id"},
		{`{"id":12,"op":"acquire","name":"a"}`, 12, "holder_id"},
		{`{"id":13,"op":"acquire","holder_id":"h"}`, 13, "name"},
		{`{"id":14,"op":"acquire","name":"bad name","holder_id":"h"}`, 14, "name"},
		{`{"id":15,"op":"acquire","name":"a","holder_id":"h","ttl_ms":0}`, 15, "ttl_ms"},
		{`{"id":16,"op":"acquire","name":"a","holder_id":"h","release_on_close":"yes"}`, 16, "release_on_close"},
		{`{"id":17,"op":"get","lease_id":null}`, 17, "lease_id"},
		{`{"id":18,"op":"cancel","target":0}`, 18, "target"},
		{`{"id":19,"op":"inspect","name":"a","scope":"all"}`, 19, "scope"},
		{`{"id":20,"op":"renew","lease_ids":[1]}`, 20, "lease_ids"},
	} {
		s.raw(tc.msg)
		r := s.wait(int64(tc.id))
		e, _ := r["error"].(map[string]any)
		d, _ := e["details"].(map[string]any)
		if e["code"] != "invalid_argument" || d["field"] != tc.field {
			t.Errorf("%s: %v, want invalid_argument on %s", tc.msg, r, tc.field)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s.c.Write(ctx, websocket.MessageBinary, []byte(`{"id":30,"op":"get","lease_id":"x"}`))
	if r := s.wait(0); errCode(t, r) != "invalid_argument" {
		t.Errorf("binary message: %v", r)
	}
	// The session is still open and serves requests.
	s.nextID = 100
	if code := s.fail("get", map[string]any{"lease_id": "x"}); code != "not_found" {
		t.Errorf("after bad input: %s", code)
	}
}

func TestSessionLimits(t *testing.T) {
	srv := testserver.New(t, nil)
	a := tenantAPI(t, srv)
	a.acquire("limit", "holder", nil)
	s := dialSession(t, srv.URL, srv.TenantKey)
	for range 1024 {
		s.send("acquire", map[string]any{"name": "limit", "holder_id": "w", "wait_ms": 60000, "mode": "shared"})
	}
	if code := s.fail("get", map[string]any{"lease_id": "x"}); code != "limit_exceeded" {
		t.Errorf("request 1025: %s", code)
	}
	// A message over 64 KiB closes the session with 1009.
	s.raw(`{"id":5000,"op":"get","lease_id":"` + strings.Repeat("x", 64<<10) + `"}`)
	<-s.closed
	if st := websocket.CloseStatus(s.err); st != websocket.StatusMessageTooBig {
		t.Errorf("close after a big message: %v (%v)", st, s.err)
	}
	dlmtest.Eventually(t, "the closed session's waiters are withdrawn", func() bool {
		return len(a.must(200, "GET", "/v1/locks/limit", nil)["waiters"].([]any)) == 0
	})
}

// TestSessionSlowReader: a client that sends but never reads is closed once
// its replies pile up, and the server goes on serving others.
func TestSessionSlowReader(t *testing.T) {
	srv := testserver.New(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, srv.URL+"/v1/session", &websocket.DialOptions{
		HTTPHeader: http.Header{"Authorization": {"Bearer " + srv.TenantKey}},
		HTTPClient: &http.Client{Transport: &http.Transport{DialContext: dlmtest.DialSmallReceiveBuffer}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	// Each inspect reply is bigger than its request; nobody reads them.
	msg := []byte(`{"id":1,"op":"inspect","name":"` + strings.Repeat("n", 256) + `"}`)
	var werr error
	for i := 0; werr == nil && i < 1_000_000; i++ {
		werr = c.Write(ctx, websocket.MessageText, msg)
		msg = fmt.Appendf(msg[:0], `{"id":%d,"op":"inspect","name":"%s"}`, i%1000+1, strings.Repeat("n", 256))
	}
	if werr == nil || ctx.Err() != nil {
		t.Fatalf("the slow reader was not closed: %v", werr)
	}
	if !errors.Is(werr, context.Canceled) {
		t.Logf("write ended with %v", werr)
	}
	other := dialSession(t, srv.URL, srv.TenantKey)
	other.call("inspect", map[string]any{"name": "a"})
}
