package dlmhttp_test

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/dlmtest"
	"github.com/dlmhq/dlm/dlmtest/testserver"
)

var (
	ownerLeaseKeys  = []string{"acquired_at", "expires_at", "fencing_token", "holder_id", "lease_id", "mode", "name", "scope", "ttl_ms"}
	holderLeaseKeys = []string{"acquired_at", "expires_at", "fencing_token", "holder_id", "mode", "name", "scope", "ttl_ms"}
)

// wantKeys fails unless m has exactly the keys want.
func wantKeys(t *testing.T, what string, m map[string]any, want []string) {
	t.Helper()
	if got := keys(m); !slices.Equal(got, want) {
		t.Errorf("%s keys = %v, want %v", what, got, want)
	}
}

// wireTime parses a time from the wire and checks its format: RFC 3339 in
// UTC.
func wireTime(t *testing.T, v any) time.Time {
	t.Helper()
	s, _ := v.(string)
	tm, err := time.Parse(time.RFC3339Nano, s)
	if err != nil || !strings.HasSuffix(s, "Z") {
		t.Fatalf("time %q is not RFC 3339 UTC: %v", s, err)
	}
	return tm
}

// testStart is a time before any server of these tests started.
var testStart = time.Now()

// grantToken reports whether lease l carries the token a grant after prev
// must carry: one above prev, or, on a fresh lock (prev 0), at least the
// server's floor (dlm.TokenFloor of a time before the server started).
func grantToken(t *testing.T, l map[string]any, prev any) bool {
	t.Helper()
	p, _ := prev.(float64) // 0 for a fresh lock
	tok, _ := l["fencing_token"].(float64)
	if p == 0 {
		return tok >= float64(dlm.TokenFloor(testStart))
	}
	return dlmtest.NextToken(int64(p), int64(tok)) // one above, or another instance's floor
}

func TestAcquireRenewRelease(t *testing.T) {
	s := testserver.New(t, nil)
	a := tenantAPI(t, s)

	l := a.must(200, "POST", "/v1/locks/orders%2F42/acquire", map[string]any{"holder_id": "worker-7"})
	wantKeys(t, "acquire", l, ownerLeaseKeys)
	if l["name"] != "orders/42" || l["scope"] != "tenant" || l["mode"] != "exclusive" || l["holder_id"] != "worker-7" ||
		!grantToken(t, l, 0) || l["ttl_ms"] != 30000.0 {
		t.Errorf("acquire = %v", l)
	}
	acq, exp := wireTime(t, l["acquired_at"]), wireTime(t, l["expires_at"])
	if exp.Sub(acq) != 30*time.Second {
		t.Errorf("expires_at - acquired_at = %v, want 30s", exp.Sub(acq))
	}
	id := l["lease_id"].(string)

	got := a.must(200, "GET", "/v1/leases/"+id, nil)
	wantKeys(t, "get lease", got, ownerLeaseKeys)
	if got["lease_id"] != id || got["fencing_token"] != l["fencing_token"] || got["expires_at"] != l["expires_at"] {
		t.Errorf("get lease = %v, want %v", got, l)
	}

	r := a.must(200, "POST", "/v1/leases/"+id+"/renew", map[string]any{"ttl_ms": 60000})
	wantKeys(t, "renew", r, ownerLeaseKeys)
	if r["ttl_ms"] != 60000.0 || r["fencing_token"] != l["fencing_token"] || r["acquired_at"] != l["acquired_at"] {
		t.Errorf("renew = %v", r)
	}
	if rexp := wireTime(t, r["expires_at"]); !rexp.After(exp) {
		t.Errorf("renewed expires_at %v is not after %v", rexp, exp)
	}
	// Renew without a body keeps the lease's (new) TTL.
	if r := a.must(200, "POST", "/v1/leases/"+id+"/renew", nil); r["ttl_ms"] != 60000.0 {
		t.Errorf("renew without body: ttl_ms = %v, want 60000", r["ttl_ms"])
	}

	rel := a.must(200, "DELETE", "/v1/leases/"+id, nil)
	wantKeys(t, "release", rel, ownerLeaseKeys)
	if rel["lease_id"] != id || rel["fencing_token"] != l["fencing_token"] {
		t.Errorf("release = %v", rel)
	}
	for _, c := range []struct{ method, path string }{
		{"GET", "/v1/leases/" + id},
		{"DELETE", "/v1/leases/" + id},
		{"POST", "/v1/leases/" + id + "/renew"},
	} {
		e := a.wantError(410, "lease_ended", c.method, c.path, nil)
		if d := e.details(t); d["reason"] != "released" {
			t.Errorf("%s %s details = %v, want reason released", c.method, c.path, d)
		}
	}

	// The next grant has a higher token.
	if next := a.acquire("orders%2F42", "worker-8", nil); !grantToken(t, next, l["fencing_token"]) {
		t.Errorf("second acquire token = %v, want one above %v", next["fencing_token"], l["fencing_token"])
	}
}

func TestModesAndOptions(t *testing.T) {
	s := testserver.New(t, nil)
	a := tenantAPI(t, s)
	s1 := a.acquire("db", "r1", map[string]any{"mode": "shared", "ttl_ms": 5000, "wait_ms": 0})
	s2 := a.acquire("db", "r2", map[string]any{"mode": "shared"})
	if s1["mode"] != "shared" || s1["ttl_ms"] != 5000.0 || !grantToken(t, s1, 0) || !grantToken(t, s2, s1["fencing_token"]) {
		t.Errorf("shared acquires = %v, %v", s1, s2)
	}
	e := a.wantError(409, "lock_conflict", "POST", "/v1/locks/db/acquire", map[string]any{"holder_id": "w"})
	hs := e.details(t)["holders"].([]any)
	if len(hs) != 2 {
		t.Fatalf("conflict holders = %v, want 2", hs)
	}
	for _, h := range hs {
		wantKeys(t, "conflict holder", h.(map[string]any), holderLeaseKeys)
	}
	// Not re-entrant: the same holder conflicts with itself.
	a.wantError(409, "lock_conflict", "POST", "/v1/locks/db/acquire", map[string]any{"holder_id": "r1"})

	g := a.acquire("db", "r1", map[string]any{"scope": "global"})
	if g["scope"] != "global" || !grantToken(t, g, 0) {
		t.Errorf("global acquire = %v", g)
	}
}

func TestBlockingAcquire(t *testing.T) {
	s := testserver.New(t, nil)
	a := tenantAPI(t, s)
	first := a.acquire("job", "a", nil)

	var wg sync.WaitGroup
	var got *response
	wg.Add(1)
	go func() {
		defer wg.Done()
		got = (&api{t, a.base, a.key}).do("POST", "/v1/locks/job/acquire", map[string]any{"holder_id": "b", "wait_ms": 20000})
	}()
	dlmtest.Eventually(t, "the waiter to queue", func() bool {
		w := a.must(200, "GET", "/v1/locks/job", nil)["waiters"].([]any)
		if len(w) != 1 {
			return false
		}
		wantKeys(t, "waiter", w[0].(map[string]any), []string{"holder_id", "mode", "queued_at", "wait_deadline"})
		return true
	})
	a.must(200, "DELETE", "/v1/leases/"+first["lease_id"].(string), nil)
	wg.Wait()
	if got.status != 200 {
		t.Fatalf("queued acquire = %d %s", got.status, got.body)
	}
	if l := got.json(t); l["holder_id"] != "b" || !grantToken(t, l, first["fencing_token"]) || l["lease_id"] == "" {
		t.Errorf("queued acquire = %v", l)
	}

	e := a.wantError(409, "wait_timeout", "POST", "/v1/locks/job/acquire", map[string]any{"holder_id": "c", "wait_ms": 100})
	if hs := e.details(t)["holders"].([]any); len(hs) != 1 || hs[0].(map[string]any)["holder_id"] != "b" {
		t.Errorf("wait_timeout holders = %v", hs)
	}
}

func TestIdempotency(t *testing.T) {
	s := testserver.New(t, nil)
	a := tenantAPI(t, s)
	body := map[string]any{"holder_id": "w", "idempotency_key": "k1"}

	first := a.must(200, "POST", "/v1/locks/x/acquire", body)
	if _, ok := first["replayed"]; ok {
		t.Errorf("first acquire has replayed: %v", first)
	}
	again := a.must(200, "POST", "/v1/locks/x/acquire", body)
	wantKeys(t, "replay", again, slices.Sorted(slices.Values(append(slices.Clone(ownerLeaseKeys), "replayed"))))
	if again["replayed"] != true || again["lease_id"] != first["lease_id"] || again["fencing_token"] != first["fencing_token"] {
		t.Errorf("replay = %v, first %v", again, first)
	}

	// The header works alone, and together with an equal body field.
	byHeader := a.must(200, "POST", "/v1/locks/y/acquire", map[string]any{"holder_id": "w"}, "Idempotency-Key", "k2")
	both := a.must(200, "POST", "/v1/locks/y/acquire", map[string]any{"holder_id": "w", "idempotency_key": "k2"}, "Idempotency-Key", "k2")
	if both["replayed"] != true || both["lease_id"] != byHeader["lease_id"] {
		t.Errorf("header then body replay = %v, first %v", both, byHeader)
	}
	e := a.wantError(400, "invalid_argument", "POST", "/v1/locks/y/acquire", map[string]any{"holder_id": "w", "idempotency_key": "k2"}, "Idempotency-Key", "other")
	if e.details(t)["field"] != "idempotency_key" {
		t.Errorf("differing keys: details %v", e.details(t))
	}

	// The same key for a different request: 422.
	a.wantError(422, "idempotency_key_reused", "POST", "/v1/locks/x/acquire", map[string]any{"holder_id": "other", "idempotency_key": "k1"})
	a.wantError(422, "idempotency_key_reused", "POST", "/v1/locks/z/acquire", body)
}

// TestIdempotencyComparesTheOriginalRequest: guarantee 6. A retry with
// another name, scope, mode, holder_id or ttl_ms is 422, also after a renew
// changed the lease's TTL; wait_ms may differ.
func TestIdempotencyComparesTheOriginalRequest(t *testing.T) {
	s := testserver.New(t, nil)
	a := tenantAPI(t, s)
	const path = "/v1/locks/idem%2Fa/acquire"
	original := map[string]any{"holder_id": "w", "ttl_ms": 10000, "idempotency_key": "key-1"}
	first := a.must(200, "POST", path, original)
	with := func(k string, v any) map[string]any {
		m := maps.Clone(original)
		m[k] = v
		return m
	}
	a.wantError(422, "idempotency_key_reused", "POST", path, with("ttl_ms", 20000))
	a.wantError(422, "idempotency_key_reused", "POST", path, with("holder_id", "v"))
	a.wantError(422, "idempotency_key_reused", "POST", path, with("mode", "shared"))
	a.wantError(422, "idempotency_key_reused", "POST", path, with("scope", "global"))
	a.wantError(422, "idempotency_key_reused", "POST", "/v1/locks/idem%2Fb/acquire", original)
	if again := a.must(200, "POST", path, with("wait_ms", 5000)); again["replayed"] != true || again["lease_id"] != first["lease_id"] {
		t.Errorf("retry with another wait_ms = %v, want the lease replayed", again)
	}

	a.must(200, "POST", "/v1/leases/"+first["lease_id"].(string)+"/renew", map[string]any{"ttl_ms": 20000})
	again := a.must(200, "POST", path, original)
	if again["replayed"] != true || again["lease_id"] != first["lease_id"] || again["ttl_ms"] != 20000.0 {
		t.Errorf("retry after a renew = %v, want the renewed lease replayed", again)
	}
	a.wantError(422, "idempotency_key_reused", "POST", path, with("ttl_ms", 20000))

	// An omitted ttl_ms is the default, the same request as giving it.
	a.must(200, "POST", "/v1/locks/idem%2Fc/acquire", map[string]any{"holder_id": "w", "idempotency_key": "key-2"})
	if again := a.must(200, "POST", "/v1/locks/idem%2Fc/acquire", map[string]any{"holder_id": "w", "idempotency_key": "key-2", "ttl_ms": 30000}); again["replayed"] != true {
		t.Errorf("retry giving the default ttl_ms = %v, want replayed", again)
	}
}

func TestDryRun(t *testing.T) {
	s := testserver.New(t, nil)
	a := tenantAPI(t, s)
	dry := map[string]any{"holder_id": "w", "dry_run": true}

	r := a.do("POST", "/v1/locks/d/acquire", dry)
	if r.status != 200 || !strings.Contains(string(r.body), `"holders":[]`) {
		t.Fatalf("dry run on a free lock = %d %s", r.status, r.body)
	}
	m := r.json(t)
	wantKeys(t, "dry run", m, []string{"holders", "waiters", "would_grant"})
	if m["would_grant"] != true || m["waiters"] != 0.0 {
		t.Errorf("dry run = %v", m)
	}
	if tok := a.must(200, "GET", "/v1/locks/d", nil)["fencing_token"]; tok != 0.0 {
		t.Errorf("dry run changed the token to %v", tok)
	}

	a.acquire("d", "holder", nil)
	m = a.must(200, "POST", "/v1/locks/d/acquire", dry)
	hs := m["holders"].([]any)
	if m["would_grant"] != false || len(hs) != 1 {
		t.Fatalf("dry run on a held lock = %v", m)
	}
	wantKeys(t, "dry run holder", hs[0].(map[string]any), holderLeaseKeys)
	// Shared would not be granted either, and a dry run validates like an
	// acquire.
	if m := a.must(200, "POST", "/v1/locks/d/acquire", map[string]any{"holder_id": "w", "mode": "shared", "dry_run": true}); m["would_grant"] != false {
		t.Errorf("shared dry run = %v", m)
	}
	a.wantError(400, "invalid_argument", "POST", "/v1/locks/d/acquire", map[string]any{"holder_id": "w", "dry_run": true, "ttl_ms": 1})
}

func TestInspect(t *testing.T) {
	s := testserver.New(t, nil)
	a := tenantAPI(t, s)
	r := a.do("GET", "/v1/locks/never%2Fused", nil)
	if r.status != 200 {
		t.Fatalf("inspect = %d %s", r.status, r.body)
	}
	for _, want := range []string{`"holders":[]`, `"waiters":[]`, `"fencing_token":0`, `"name":"never/used"`, `"scope":"tenant"`} {
		if !strings.Contains(string(r.body), want) {
			t.Errorf("inspect body %s lacks %s", r.body, want)
		}
	}
	wantKeys(t, "inspect", r.json(t), []string{"fencing_token", "holders", "name", "scope", "waiters"})

	used := a.acquire("used", "h", nil)
	m := a.must(200, "GET", "/v1/locks/used?scope=tenant", nil)
	hs := m["holders"].([]any)
	if m["fencing_token"] != used["fencing_token"] || len(hs) != 1 {
		t.Fatalf("inspect held = %v", m)
	}
	wantKeys(t, "inspect holder", hs[0].(map[string]any), holderLeaseKeys)
	if m := a.must(200, "GET", "/v1/locks/used?scope=global", nil); m["fencing_token"] != 0.0 || m["scope"] != "global" {
		t.Errorf("global inspect = %v", m)
	}
}

func TestListPaging(t *testing.T) {
	s := testserver.New(t, nil)
	a := tenantAPI(t, s)
	for _, n := range []string{"a/3", "a/1", "b/1", "a/5", "a/2", "a/4"} {
		a.acquire(url.PathEscape(n), "h", nil)
	}
	released := a.acquire("a%2F0", "h", nil)
	a.must(200, "DELETE", "/v1/leases/"+released["lease_id"].(string), nil)

	var names []string
	cursor, pages := "", 0
	for {
		q := url.Values{"prefix": {"a/"}, "limit": {"2"}}
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		m := a.must(200, "GET", "/v1/locks?"+q.Encode(), nil)
		wantKeys(t, "list", m, []string{"locks", "next_cursor"})
		pages++
		for _, l := range m["locks"].([]any) {
			lm := l.(map[string]any)
			names = append(names, lm["name"].(string))
			for _, h := range lm["holders"].([]any) {
				wantKeys(t, "listed holder", h.(map[string]any), holderLeaseKeys)
			}
		}
		cursor = m["next_cursor"].(string)
		if cursor == "" || pages > 10 {
			break
		}
	}
	if want := []string{"a/1", "a/2", "a/3", "a/4", "a/5"}; !slices.Equal(names, want) {
		t.Errorf("listed %v, want %v", names, want)
	}
	// Nothing in the global scope: an empty list, not null.
	r := a.do("GET", "/v1/locks?scope=global", nil)
	if r.status != 200 || !strings.Contains(string(r.body), `"locks":[]`) {
		t.Errorf("empty list = %d %s", r.status, r.body)
	}
}

func TestForceRelease(t *testing.T) {
	s := testserver.New(t, nil)
	a, admin := tenantAPI(t, s), adminAPI(t, s)
	l := a.acquire("stuck", "h", nil)
	a.wantError(403, "permission_denied", "POST", "/v1/locks/stuck/force-release", nil)
	e := admin.wantError(400, "invalid_argument", "POST", "/v1/locks/stuck/force-release", nil)
	if e.details(t)["field"] != "tenant" {
		t.Errorf("force-release without tenant: %v", e.details(t))
	}
	admin.wantError(404, "not_found", "POST", "/v1/locks/stuck/force-release?tenant=nosuch", nil)

	m := admin.must(200, "POST", "/v1/locks/stuck/force-release?tenant=default", nil)
	ended := m["ended"].([]any)
	if len(ended) != 1 {
		t.Fatalf("force-release = %v", m)
	}
	wantKeys(t, "ended", ended[0].(map[string]any), holderLeaseKeys)
	r := a.wantError(410, "lease_ended", "POST", "/v1/leases/"+l["lease_id"].(string)+"/renew", nil)
	if r.details(t)["reason"] != "force_released" {
		t.Errorf("renew after force-release: %v", r.details(t))
	}
	if m := admin.must(200, "POST", "/v1/locks/stuck/force-release?tenant=default", nil); len(m["ended"].([]any)) != 0 {
		t.Errorf("second force-release = %v", m)
	}

	a.acquire("g", "h", map[string]any{"scope": "global"})
	if m := admin.must(200, "POST", "/v1/locks/g/force-release?scope=global", nil); len(m["ended"].([]any)) != 1 {
		t.Errorf("global force-release = %v", m)
	}
	// The admin key reads a tenant's locks only by naming it.
	admin.wantError(400, "invalid_argument", "GET", "/v1/locks/stuck", nil)
	admin.must(200, "GET", "/v1/locks/stuck?tenant=default", nil)
	admin.must(200, "GET", "/v1/locks?tenant=default", nil)
	admin.wantError(403, "permission_denied", "POST", "/v1/locks/stuck/acquire", map[string]any{"holder_id": "h"})
	admin.wantError(403, "permission_denied", "GET", "/v1/leases/"+l["lease_id"].(string), nil)
}

func TestTenantsAndKeys(t *testing.T) {
	s := testserver.New(t, nil)
	a, admin := tenantAPI(t, s), adminAPI(t, s)

	m := admin.must(201, "POST", "/v1/tenants", map[string]any{"name": "acme"})
	wantKeys(t, "create tenant", m, []string{"api_key", "key_id", "tenant"})
	tn := m["tenant"].(map[string]any)
	wantKeys(t, "tenant", tn, []string{"created_at", "name"})
	wireTime(t, tn["created_at"])
	if tn["name"] != "acme" {
		t.Errorf("tenant = %v", tn)
	}
	key1, id1 := m["api_key"].(string), m["key_id"].(string)
	admin.wantError(400, "invalid_argument", "POST", "/v1/tenants", map[string]any{"name": "acme"})
	admin.wantError(400, "invalid_argument", "POST", "/v1/tenants", map[string]any{"name": "Bad Name"})
	admin.wantError(400, "invalid_argument", "POST", "/v1/tenants", nil)

	var names []string
	for _, x := range admin.must(200, "GET", "/v1/tenants", nil)["tenants"].([]any) {
		names = append(names, x.(map[string]any)["name"].(string))
	}
	if !slices.Equal(names, []string{"acme", "default"}) {
		t.Errorf("tenants = %v", names)
	}
	a.wantError(403, "permission_denied", "GET", "/v1/tenants", nil)
	a.wantError(403, "permission_denied", "POST", "/v1/tenants", map[string]any{"name": "evil"})

	k2 := admin.must(201, "POST", "/v1/tenants/acme/keys", nil)
	wantKeys(t, "new key", k2, []string{"api_key", "key_id"})
	admin.wantError(404, "not_found", "POST", "/v1/tenants/nosuch/keys", nil)
	acme := &api{t, s.URL, key1}
	acme.acquire("mine", "h", nil)

	if r := admin.do("DELETE", "/v1/tenants/acme/keys/"+id1, nil); r.status != 204 || len(r.body) != 0 {
		t.Fatalf("revoke = %d %q", r.status, r.body)
	}
	acme.wantError(401, "unauthenticated", "GET", "/v1/locks/mine", nil)
	acme2 := &api{t, s.URL, k2["api_key"].(string)}
	if m := acme2.must(200, "GET", "/v1/locks/mine", nil); len(m["holders"].([]any)) != 1 {
		t.Errorf("the second key sees %v", m)
	}
	admin.wantError(404, "not_found", "DELETE", "/v1/tenants/acme/keys/nosuch", nil)
	admin.wantError(404, "not_found", "DELETE", "/v1/tenants/default/keys/"+k2["key_id"].(string), nil)
}

func TestTenantIsolation(t *testing.T) {
	s := testserver.New(t, nil)
	a, admin := tenantAPI(t, s), adminAPI(t, s)
	b := &api{t, s.URL, admin.must(201, "POST", "/v1/tenants", map[string]any{"name": "bee"})["api_key"].(string)}

	la := a.acquire("same", "a", nil)
	lb := b.acquire("same", "b", nil) // another namespace: no conflict
	if !grantToken(t, lb, 0) {
		t.Errorf("tenant b's token = %v, want its own counter", lb["fencing_token"])
	}
	id := la["lease_id"].(string)
	b.wantError(404, "not_found", "GET", "/v1/leases/"+id, nil)
	b.wantError(404, "not_found", "POST", "/v1/leases/"+id+"/renew", nil)
	b.wantError(404, "not_found", "DELETE", "/v1/leases/"+id, nil)
	b.wantError(404, "not_found", "GET", "/v1/leases/NOSUCHLEASE", nil)
	b.wantError(403, "permission_denied", "GET", "/v1/locks/same?tenant=default", nil)
	if hs := b.must(200, "GET", "/v1/locks/same", nil)["holders"].([]any); len(hs) != 1 || hs[0].(map[string]any)["holder_id"] != "b" {
		t.Errorf("b inspects %v", hs)
	}
	a.acquire("only-a", "a", nil)
	for _, l := range b.must(200, "GET", "/v1/locks", nil)["locks"].([]any) {
		if n := l.(map[string]any)["name"]; n != "same" {
			t.Errorf("b lists %v", n)
		}
	}
	a.must(200, "GET", "/v1/leases/"+id, nil) // still held by a

	// Both see and contend for the global scope.
	a.acquire("shared-res", "a", map[string]any{"scope": "global"})
	if hs := b.must(200, "GET", "/v1/locks/shared-res?scope=global", nil)["holders"].([]any); len(hs) != 1 {
		t.Errorf("b sees global holders %v", hs)
	}
	b.wantError(409, "lock_conflict", "POST", "/v1/locks/shared-res/acquire", map[string]any{"holder_id": "b", "scope": "global"})
}

func TestLockNamesInPaths(t *testing.T) {
	s := testserver.New(t, nil)
	a := tenantAPI(t, s)
	all := "AZaz09._~:/@+=-"
	if l := a.acquire(url.PathEscape(all), "h", nil); l["name"] != all {
		t.Errorf("name = %v, want %v", l["name"], all)
	}
	// An unencoded slash is accepted where unambiguous.
	l := a.acquire("orders/7", "h", nil)
	if l["name"] != "orders/7" {
		t.Errorf("name = %v", l["name"])
	}
	a.wantError(409, "lock_conflict", "POST", "/v1/locks/orders%2F7/acquire", map[string]any{"holder_id": "x"})
	if m := a.must(200, "GET", "/v1/locks/orders/7", nil); m["fencing_token"] != l["fencing_token"] {
		t.Errorf("inspect orders/7 = %v", m)
	}
	// GET never acquires: this inspects the lock "x/acquire".
	if m := a.must(200, "GET", "/v1/locks/x/acquire", nil); m["name"] != "x/acquire" {
		t.Errorf("GET .../x/acquire = %v", m)
	}
	if m := a.acquire("x%2Facquire", "h", nil); m["name"] != "x/acquire" {
		t.Errorf("acquire x%%2Facquire = %v", m)
	}
	// Slashes are kept as they are, never cleaned.
	if m := a.acquire("a//b", "h", nil); m["name"] != "a//b" {
		t.Errorf("name = %v", m["name"])
	}
	for _, p := range []string{"/v1/locks//acquire", "/v1/locks/%20/acquire", "/v1/locks/caf%C3%A9/acquire", "/v1/locks/" + strings.Repeat("n", 257) + "/acquire"} {
		e := a.wantError(400, "invalid_argument", "POST", p, map[string]any{"holder_id": "h"})
		if e.details(t)["field"] != "name" {
			t.Errorf("%s: details %v", p, e.details(t))
		}
	}
	a.wantError(400, "invalid_argument", "GET", "/v1/locks/", nil)
}

// TestRequestLogs: one debug line per request, and no lease ID in any of
// them (it is a bearer capability).
func TestRequestLogs(t *testing.T) {
	var buf dlmtest.Buffer
	logger := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s := testserver.New(t, &testserver.Options{Logger: logger})
	a := tenantAPI(t, s)
	id := a.acquire("logged", "h", nil)["lease_id"].(string)
	a.must(200, "GET", "/v1/leases/"+id, nil)
	a.must(200, "POST", "/v1/leases/"+id+"/renew", nil)
	a.must(200, "DELETE", "/v1/leases/"+id, nil)
	a.wantError(410, "lease_ended", "DELETE", "/v1/leases/"+id, nil)
	logs := buf.String()
	if strings.Contains(logs, id) {
		t.Errorf("a lease ID appears in the logs:\n%s", logs)
	}
	if n := strings.Count(logs, "msg=request"); n != 5 {
		t.Errorf("%d request lines, want 5:\n%s", n, logs)
	}
	if !strings.Contains(logs, "path=/v1/leases/{lease_id}/renew") {
		t.Errorf("no redacted renew path in the logs:\n%s", logs)
	}
}

// TestBlockingAcquireClientGone: a client that gives up while queued leaves
// the queue, and the lock goes to the next waiter rather than to nobody.
func TestBlockingAcquireClientGone(t *testing.T) {
	s := testserver.New(t, nil)
	a := tenantAPI(t, s)
	held := a.acquire("q", "holder", nil)

	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "POST", s.URL+"/v1/locks/q/acquire", strings.NewReader(`{"holder_id":"quitter","wait_ms":60000}`))
	req.Header.Set("Authorization", "Bearer "+s.TenantKey)
	gone := make(chan error, 1)
	go func() {
		resp, err := httpClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		gone <- err
	}()
	dlmtest.Eventually(t, "the waiter to queue", func() bool {
		return len(a.must(200, "GET", "/v1/locks/q", nil)["waiters"].([]any)) == 1
	})
	cancel()
	if err := <-gone; err == nil {
		t.Fatal("the cancelled request succeeded")
	}
	dlmtest.Eventually(t, "the waiter to leave the queue", func() bool {
		return len(a.must(200, "GET", "/v1/locks/q", nil)["waiters"].([]any)) == 0
	})
	a.must(200, "DELETE", "/v1/leases/"+held["lease_id"].(string), nil)
	if m := a.must(200, "GET", "/v1/locks/q", nil); len(m["holders"].([]any)) != 0 {
		t.Errorf("the lock went to the client that left: %v", m)
	}
}

// TestDataFilesArePrivate: the database and SQLite's -wal and -shm files are
// mode 0600 whatever the umask, and files left more open are narrowed at
// the next start. (Not parallel: the umask is the process's.)
func TestDataFilesArePrivate(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	s := testserver.New(t, nil)
	tenantAPI(t, s).acquire("private", "h", nil)
	files := []string{"dlm.db", "dlm.db-wal", "dlm.db-shm"}
	check := func(when string) {
		t.Helper()
		for _, f := range files {
			st, err := os.Stat(filepath.Join(s.Dir, f))
			if err != nil {
				t.Fatal(err)
			}
			if m := st.Mode().Perm(); m != 0o600 {
				t.Errorf("%s: %s has mode %v, want 0600", when, f, m)
			}
		}
	}
	check("fresh")
	s.Close()
	for _, f := range files {
		if err := os.Chmod(filepath.Join(s.Dir, f), 0o644); err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Fatal(err)
		}
	}
	s = testserver.New(t, &testserver.Options{Dir: s.Dir})
	tenantAPI(t, s).acquire("private2", "h", nil)
	check("restarted")
}
