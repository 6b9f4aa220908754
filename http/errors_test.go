package dlmhttp_test

import (
	"context"
	"database/sql"
	"errors"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dlmhq/dlm/dlmtest"
	"github.com/dlmhq/dlm/dlmtest/testserver"
	"github.com/dlmhq/dlm/engine"
)

// TestBadInput sends one malformed or refused request per row of the API's
// error table (and more for 400), checks status, code and details, and then
// that the server still serves.
func TestBadInput(t *testing.T) {
	s := testserver.New(t, nil)
	a, admin := tenantAPI(t, s), adminAPI(t, s)

	held := a.acquire("held", "holder", map[string]any{"idempotency_key": "idem-1"})
	released := a.acquire("rel", "h", nil)
	a.must(200, "DELETE", "/v1/leases/"+released["lease_id"].(string), nil)
	forced := a.acquire("forced", "h", nil)
	admin.must(200, "POST", "/v1/locks/forced/force-release?tenant=default", nil)
	expired := a.acquire("exp", "h", map[string]any{"ttl_ms": 100})
	expiredPath := "/v1/leases/" + expired["lease_id"].(string)
	dlmtest.Eventually(t, "the short lease to expire", func() bool { return a.do("GET", expiredPath, nil).status == 410 })

	big := `{"holder_id":"h","pad":"` + strings.Repeat("x", 70<<10) + `"}`
	acq := "/v1/locks/free/acquire"
	type row struct {
		name    string
		key     string // "" tenant key, "admin", "none", or a literal key
		method  string
		path    string
		body    string
		hdr     []string
		status  int
		code    string
		field   string // details.field for invalid_argument
		reason  string // details.reason for lease_ended
		holders int    // len(details.holders) for 409, -1 to skip
	}
	rows := []row{
		{name: "malformed JSON", method: "POST", path: acq, body: `{"holder_id":`, status: 400, code: "invalid_argument", field: "body"},
		{name: "trailing garbage", method: "POST", path: acq, body: `{"holder_id":"h"} x`, status: 400, code: "invalid_argument", field: "body"},
		{name: "two objects", method: "POST", path: acq, body: `{"holder_id":"h"}{}`, status: 400, code: "invalid_argument", field: "body"},
		{name: "form body", method: "POST", path: acq, body: `holder_id=h`, status: 400, code: "invalid_argument", field: "body"},
		{name: "array body", method: "POST", path: acq, body: `[{"holder_id":"h"}]`, status: 400, code: "invalid_argument", field: "body"},
		{name: "null body", method: "POST", path: acq, body: `null`, status: 400, code: "invalid_argument", field: "body"},
		{name: "unknown field", method: "POST", path: acq, body: `{"holder_id":"h","ttl":5}`, status: 400, code: "invalid_argument", field: "ttl"},
		{name: "field case", method: "POST", path: acq, body: `{"Holder_ID":"h"}`, status: 400, code: "invalid_argument", field: "Holder_ID"},
		{name: "no holder", method: "POST", path: acq, body: `{}`, status: 400, code: "invalid_argument", field: "holder_id"},
		{name: "empty body", method: "POST", path: acq, status: 400, code: "invalid_argument", field: "holder_id"},
		{name: "empty holder", method: "POST", path: acq, body: `{"holder_id":""}`, status: 400, code: "invalid_argument", field: "holder_id"},
		{name: "control char holder", method: "POST", path: acq, body: `{"holder_id":"a\u0001"}`, status: 400, code: "invalid_argument", field: "holder_id"},
		{name: "bidi override holder", method: "POST", path: acq, body: `{"holder_id":"worker\u202e7"}`, status: 400, code: "invalid_argument", field: "holder_id"},
		{name: "bidi isolate holder", method: "POST", path: acq, body: `{"holder_id":"\u2066worker"}`, status: 400, code: "invalid_argument", field: "holder_id"},
		{name: "zero width holder", method: "POST", path: acq, body: `{"holder_id":"work\u200ber"}`, status: 400, code: "invalid_argument", field: "holder_id"},
		{name: "byte order mark holder", method: "POST", path: acq, body: `{"holder_id":"\ufeffworker"}`, status: 400, code: "invalid_argument", field: "holder_id"},
		{name: "line separator holder", method: "POST", path: acq, body: `{"holder_id":"a\u2028b"}`, status: 400, code: "invalid_argument", field: "holder_id"},
		{name: "long holder", method: "POST", path: acq, body: `{"holder_id":"` + strings.Repeat("h", 129) + `"}`, status: 400, code: "invalid_argument", field: "holder_id"},
		{name: "holder number", method: "POST", path: acq, body: `{"holder_id":7}`, status: 400, code: "invalid_argument", field: "holder_id"},
		{name: "ttl 0", method: "POST", path: acq, body: `{"holder_id":"h","ttl_ms":0}`, status: 400, code: "invalid_argument", field: "ttl_ms"},
		{name: "ttl too short", method: "POST", path: acq, body: `{"holder_id":"h","ttl_ms":99}`, status: 400, code: "invalid_argument", field: "ttl_ms"},
		{name: "ttl negative", method: "POST", path: acq, body: `{"holder_id":"h","ttl_ms":-1}`, status: 400, code: "invalid_argument", field: "ttl_ms"},
		{name: "ttl too long", method: "POST", path: acq, body: `{"holder_id":"h","ttl_ms":86400001}`, status: 400, code: "invalid_argument", field: "ttl_ms"},
		{name: "ttl max int64", method: "POST", path: acq, body: `{"holder_id":"h","ttl_ms":9223372036854775807}`, status: 400, code: "invalid_argument", field: "ttl_ms"},
		{name: "ttl overflows int64", method: "POST", path: acq, body: `{"holder_id":"h","ttl_ms":99999999999999999999}`, status: 400, code: "invalid_argument", field: "ttl_ms"},
		{name: "ttl fraction", method: "POST", path: acq, body: `{"holder_id":"h","ttl_ms":1000.5}`, status: 400, code: "invalid_argument", field: "ttl_ms"},
		{name: "ttl string", method: "POST", path: acq, body: `{"holder_id":"h","ttl_ms":"1000"}`, status: 400, code: "invalid_argument", field: "ttl_ms"},
		{name: "ttl null", method: "POST", path: acq, body: `{"holder_id":"h","ttl_ms":null}`, status: 400, code: "invalid_argument", field: "ttl_ms"},
		{name: "wait negative", method: "POST", path: acq, body: `{"holder_id":"h","wait_ms":-1}`, status: 400, code: "invalid_argument", field: "wait_ms"},
		{name: "wait too long", method: "POST", path: acq, body: `{"holder_id":"h","wait_ms":300001}`, status: 400, code: "invalid_argument", field: "wait_ms"},
		{name: "mode bogus", method: "POST", path: acq, body: `{"holder_id":"h","mode":"bogus"}`, status: 400, code: "invalid_argument", field: "mode"},
		{name: "mode empty", method: "POST", path: acq, body: `{"holder_id":"h","mode":""}`, status: 400, code: "invalid_argument", field: "mode"},
		{name: "mode case", method: "POST", path: acq, body: `{"holder_id":"h","mode":"Shared"}`, status: 400, code: "invalid_argument", field: "mode"},
		{name: "scope bogus", method: "POST", path: acq, body: `{"holder_id":"h","scope":"planet"}`, status: 400, code: "invalid_argument", field: "scope"},
		{name: "scope empty", method: "POST", path: acq, body: `{"holder_id":"h","scope":""}`, status: 400, code: "invalid_argument", field: "scope"},
		{name: "idempotency key empty", method: "POST", path: acq, body: `{"holder_id":"h","idempotency_key":""}`, status: 400, code: "invalid_argument", field: "idempotency_key"},
		{name: "idempotency header empty", method: "POST", path: acq, body: `{"holder_id":"h"}`, hdr: []string{"Idempotency-Key", ""}, status: 400, code: "invalid_argument", field: "idempotency_key"},
		{name: "idempotency header twice", method: "POST", path: acq, body: `{"holder_id":"h"}`, hdr: []string{"Idempotency-Key", "a", "Idempotency-Key", "b"}, status: 400, code: "invalid_argument", field: "idempotency_key"},
		{name: "idempotency header and body differ", method: "POST", path: acq, body: `{"holder_id":"h","idempotency_key":"a"}`, hdr: []string{"Idempotency-Key", "b"}, status: 400, code: "invalid_argument", field: "idempotency_key"},
		{name: "duplicate key", method: "POST", path: acq, body: `{"holder_id":"h","ttl_ms":100,"ttl_ms":200000}`, status: 400, code: "invalid_argument", field: "ttl_ms"},
		{name: "duplicate key nested", method: "POST", path: acq, body: `{"holder_id":"h","mode":[{"x":1,"x":2}]}`, status: 400, code: "invalid_argument", field: "x"},
		{name: "duplicate key in renew", method: "POST", path: "/v1/leases/" + held["lease_id"].(string) + "/renew", body: `{"ttl_ms":100,"ttl_ms":200000}`, status: 400, code: "invalid_argument", field: "ttl_ms"},
		{name: "dry_run string", method: "POST", path: acq, body: `{"holder_id":"h","dry_run":"yes"}`, status: 400, code: "invalid_argument", field: "dry_run"},
		{name: "bad name", method: "POST", path: "/v1/locks/bad%20name/acquire", body: `{"holder_id":"h"}`, status: 400, code: "invalid_argument", field: "name"},
		{name: "empty name", method: "POST", path: "/v1/locks//acquire", body: `{"holder_id":"h"}`, status: 400, code: "invalid_argument", field: "name"},
		{name: "acquire takes no query", method: "POST", path: acq + "?wait_ms=5", body: `{"holder_id":"h"}`, status: 400, code: "invalid_argument", field: "wait_ms"},
		{name: "renew ttl 0", method: "POST", path: "/v1/leases/" + held["lease_id"].(string) + "/renew", body: `{"ttl_ms":0}`, status: 400, code: "invalid_argument", field: "ttl_ms"},
		{name: "renew unknown field", method: "POST", path: "/v1/leases/" + held["lease_id"].(string) + "/renew", body: `{"wait_ms":5}`, status: 400, code: "invalid_argument", field: "wait_ms"},
		{name: "inspect scope bogus", method: "GET", path: "/v1/locks/x?scope=planet", status: 400, code: "invalid_argument", field: "scope"},
		{name: "inspect unknown param", method: "GET", path: "/v1/locks/x?scop=global", status: 400, code: "invalid_argument", field: "scop"},
		{name: "inspect scope twice", method: "GET", path: "/v1/locks/x?scope=global&scope=tenant", status: 400, code: "invalid_argument", field: "scope"},
		{name: "list limit 0", method: "GET", path: "/v1/locks?limit=0", status: 400, code: "invalid_argument", field: "limit"},
		{name: "list limit big", method: "GET", path: "/v1/locks?limit=1001", status: 400, code: "invalid_argument", field: "limit"},
		{name: "list limit text", method: "GET", path: "/v1/locks?limit=ten", status: 400, code: "invalid_argument", field: "limit"},
		{name: "list bad prefix", method: "GET", path: "/v1/locks?prefix=a%20b", status: 400, code: "invalid_argument", field: "prefix"},
		{name: "list bad cursor", method: "GET", path: "/v1/locks?cursor=!!", status: 400, code: "invalid_argument", field: "cursor"},
		{name: "create tenant null name", key: "admin", method: "POST", path: "/v1/tenants", body: `{"name":null}`, status: 400, code: "invalid_argument", field: "name"},
		{name: "wrong method", method: "DELETE", path: "/v1/locks/x", status: 405, code: "invalid_argument"},

		{name: "no key", key: "none", method: "POST", path: acq, body: `{"holder_id":"h"}`, status: 401, code: "unauthenticated"},
		{name: "basic auth", key: "none", hdr: []string{"Authorization", "Basic YTpi"}, method: "GET", path: "/v1/locks", status: 401, code: "unauthenticated"},
		{name: "unknown key", key: "dlm_nosuch_secret", method: "GET", path: "/v1/locks", status: 401, code: "unauthenticated"},
		{name: "tampered key", key: s.TenantKey + "x", method: "GET", path: "/v1/locks", status: 401, code: "unauthenticated"},
		{name: "tenant key on admin route", method: "GET", path: "/v1/tenants", status: 403, code: "permission_denied"},
		{name: "admin key on tenant route", key: "admin", method: "POST", path: acq, body: `{"holder_id":"h"}`, status: 403, code: "permission_denied"},
		{name: "another tenant", method: "GET", path: "/v1/locks/x?tenant=other", status: 403, code: "permission_denied"},
		{name: "another tenant's events", method: "GET", path: "/v1/events?tenant=other", status: 403, code: "permission_denied"},
		{name: "another tenant's watch", method: "GET", path: "/v1/watch?tenant=other", status: 403, code: "permission_denied"},
		{name: "headers too large", method: "GET", path: "/v1/locks", hdr: []string{"X-Pad", strings.Repeat("x", 1<<20+8<<10)}, status: 431, code: "payload_too_large"},
		{name: "unknown route", method: "GET", path: "/v1/nope", status: 404, code: "not_found"},
		{name: "unknown top route", key: "none", method: "GET", path: "/nope", status: 404, code: "not_found"},
		{name: "trailing slash", method: "GET", path: "/v1/tenants/", status: 404, code: "not_found"},
		{name: "unknown lease", method: "GET", path: "/v1/leases/NOSUCH", status: 404, code: "not_found"},
		{name: "release unknown lease", method: "DELETE", path: "/v1/leases/NOSUCH", status: 404, code: "not_found"},
		{name: "lock conflict", method: "POST", path: "/v1/locks/held/acquire", body: `{"holder_id":"other"}`, status: 409, code: "lock_conflict", holders: 1},
		{name: "wait timeout", method: "POST", path: "/v1/locks/held/acquire", body: `{"holder_id":"other","wait_ms":100}`, status: 409, code: "wait_timeout", holders: 1},
		{name: "released", method: "GET", path: "/v1/leases/" + released["lease_id"].(string), status: 410, code: "lease_ended", reason: "released"},
		{name: "expired", method: "POST", path: expiredPath + "/renew", status: 410, code: "lease_ended", reason: "expired"},
		{name: "force released", method: "DELETE", path: "/v1/leases/" + forced["lease_id"].(string), status: 410, code: "lease_ended", reason: "force_released"},
		{name: "body too large", method: "POST", path: acq, body: big, status: 413, code: "payload_too_large"},
		{name: "body too large chunked", method: "POST", path: acq, body: big, hdr: []string{"Transfer-Encoding", "chunked"}, status: 413, code: "payload_too_large"},
		{name: "idempotency key reused", method: "POST", path: "/v1/locks/held/acquire", body: `{"holder_id":"someone-else","idempotency_key":"idem-1"}`, status: 422, code: "idempotency_key_reused"},
	}
	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			c := &api{t, s.URL, s.TenantKey}
			switch r.key {
			case "":
			case "admin":
				c.key = s.AdminKey
			case "none":
				c.key = ""
			default:
				c.key = r.key
			}
			var body any
			if r.body != "" {
				body = r.body
			}
			var resp *response
			if r.status == http.StatusRequestEntityTooLarge {
				resp = tooLarge(t, c, r.method, r.path, body, r.hdr...)
				if got := resp.errorCode(t); got != r.code {
					t.Fatalf("code %q, want %q (body %s)", got, r.code, resp.body)
				}
			} else {
				resp = c.wantError(r.status, r.code, r.method, r.path, body, r.hdr...)
			}
			d := resp.details(t)
			switch r.status {
			case 400:
				if d["field"] != r.field {
					t.Errorf("details = %v, want field %q", d, r.field)
				}
			case 401:
				if !strings.HasPrefix(resp.header.Get("WWW-Authenticate"), "Bearer") {
					t.Errorf("401 without WWW-Authenticate: Bearer")
				}
			case 405:
				if resp.header.Get("Allow") == "" {
					t.Errorf("405 without Allow")
				}
			case 409:
				if hs, ok := d["holders"].([]any); !ok || len(hs) != r.holders {
					t.Errorf("details = %v, want %d holders", d, r.holders)
				}
			case 410:
				if d["reason"] != r.reason {
					t.Errorf("details = %v, want reason %q", d, r.reason)
				}
			}
		})
	}

	// Just under the limits is fine: a tenant key naming its own tenant,
	// or any tenant in the global scope (as on /v1/locks), and headers of
	// a little less than 1 MiB.
	a.must(200, "GET", "/v1/events?tenant=default", nil)
	a.must(200, "GET", "/v1/events?scope=global&tenant=other", nil)
	a.must(200, "GET", "/v1/locks", nil, "X-Pad", strings.Repeat("x", 1<<20-1<<10))

	// The server is still fine.
	a.must(200, "GET", "/healthz", nil)
	a.must(200, "GET", "/readyz", nil)
	a.acquire("free", "after", nil)
	a.must(200, "GET", "/v1/leases/"+held["lease_id"].(string), nil)
}

// TestLimitExceeded: 429 at the per-tenant cap.
func TestLimitExceeded(t *testing.T) {
	s := testserver.New(t, &testserver.Options{Engine: engine.Options{MaxLeasesPerTenant: 2, MaxWaitersPerTenant: 1}})
	a := tenantAPI(t, s)
	a.acquire("one", "h", nil)
	a.acquire("two", "h", nil)
	a.wantError(429, "limit_exceeded", "POST", "/v1/locks/three/acquire", map[string]any{"holder_id": "h"})
	a.must(200, "GET", "/healthz", nil)
	a.wantError(409, "lock_conflict", "POST", "/v1/locks/one/acquire", map[string]any{"holder_id": "h"})
}

// TestShutdownAnswersWaiters: a queued acquire gets 503 when the server
// shuts down, and the lease it waited on is kept.
func TestShutdownAnswersWaiters(t *testing.T) {
	s := testserver.New(t, nil)
	a := tenantAPI(t, s)
	held := a.acquire("busy", "holder", map[string]any{"ttl_ms": 600000})

	var wg sync.WaitGroup
	var got *response
	wg.Add(1)
	go func() {
		defer wg.Done()
		got = (&api{t, s.URL, s.TenantKey}).do("POST", "/v1/locks/busy/acquire", map[string]any{"holder_id": "waiter", "wait_ms": 60000})
	}()
	dlmtest.Eventually(t, "the waiter to queue", func() bool {
		return len(a.must(200, "GET", "/v1/locks/busy", nil)["waiters"].([]any)) == 1
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.HTTP.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	wg.Wait()
	if got.status != 503 || got.errorCode(t) != "unavailable" {
		t.Fatalf("queued acquire at shutdown = %d %s", got.status, got.body)
	}
	s.Store.Close()

	// Restart on the same data: the lease is still held.
	s2 := testserver.New(t, &testserver.Options{Dir: s.Dir})
	a2 := tenantAPI(t, s2)
	if l := a2.must(200, "GET", "/v1/leases/"+held["lease_id"].(string), nil); l["holder_id"] != "holder" {
		t.Errorf("lease after restart = %v", l)
	}
	if w := a2.must(200, "GET", "/v1/locks/busy", nil)["waiters"].([]any); len(w) != 0 {
		t.Errorf("waiters after restart = %v", w)
	}
}

// TestStorageErrorIsGeneric: a storage failure is answered 503 unavailable
// with a generic message; the driver's own message goes to the log only.
func TestStorageErrorIsGeneric(t *testing.T) {
	var logs dlmtest.Buffer
	s := testserver.New(t, &testserver.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	a := tenantAPI(t, s)
	a.acquireRelease("before")
	// Break the store under the server: its reads of the event log fail
	// in the SQLite driver.
	// The server's applier may hold the write lock a moment: wait for it.
	db, err := sql.Open("sqlite", "file:"+filepath.Join(s.Dir, "dlm.db")+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`ALTER TABLE events RENAME TO events_gone`); err != nil {
		t.Fatal(err)
	}
	r := a.wantError(503, "unavailable", "GET", "/v1/events", nil)
	if msg := r.json(t)["error"].(map[string]any)["message"]; msg != "storage is unavailable" {
		t.Errorf("message = %q, want the generic one", msg)
	}
	if strings.Contains(string(r.body), "events") {
		t.Errorf("the answer shows the storage failure: %s", r.body)
	}
	if !strings.Contains(logs.String(), "no such table: events") {
		t.Errorf("the log lacks the driver's message:\n%s", logs.String())
	}
}

// tooLarge sends an oversized body until an answer arrives, and fails
// unless it is a 413. The server answers after reading the first 64 KiB
// and closes the connection with the rest unread, so the kernel may reset
// it before the client has read the answer: a reset is that race, not a
// failure.
func tooLarge(t *testing.T, c *api, method, path string, body any, hdr ...string) *response {
	t.Helper()
	for range 5 {
		r, err := c.try(method, path, body, hdr...)
		if err == nil {
			if r.status != http.StatusRequestEntityTooLarge {
				t.Fatalf("%s %s = %d %s, want 413", method, path, r.status, r.body)
			}
			return r
		}
		if !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE) {
			t.Fatalf("%s %s: %v", method, path, err)
		}
	}
	t.Fatalf("%s %s: reset five times without an answer", method, path)
	return nil
}
