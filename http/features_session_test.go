package dlmhttp_test

import (
	"testing"

	"github.com/coder/websocket"
	"github.com/dlmhq/dlm/dlmtest"
)

// The lock features on a session: acquire takes them, and acquire_many is
// POST /v1/acquire with the session's following of each lease.

// sessionLeases returns the leases of an acquire_many result.
func sessionLeases(t *testing.T, res map[string]any) []map[string]any {
	t.Helper()
	list, ok := res["leases"].([]any)
	if !ok {
		t.Fatalf("acquire_many result %v", res)
	}
	ls := make([]map[string]any, len(list))
	for i, l := range list {
		ls[i] = l.(map[string]any)
	}
	return ls
}

func TestSessionAcquireTerms(t *testing.T) {
	backends(t, func(t *testing.T, b *backend) {
		s := dialSession(t, b.urls[0], b.tenantKey)
		l := s.call("acquire", map[string]any{"name": "st/sem", "holder_id": "h", "mode": "shared", "limit": 2, "lock_delay_ms": 500, "max_hold_ms": 60000})
		if l["limit"] != 2.0 || l["lock_delay_ms"] != 500.0 || l["max_hold_ms"] != 60000.0 {
			t.Errorf("lease %v, want its terms", l)
		}
		for _, bad := range []map[string]any{
			{"name": "st/sem", "holder_id": "x", "mode": "shared", "limit": 3},
			{"name": "st/new", "holder_id": "x", "mode": "shared", "limit": 0},
			{"name": "st/new", "holder_id": "x", "max_hold_ms": 0},
			{"name": "st/new", "holder_id": "x", "lock_delay_ms": 60001},
		} {
			if code := s.fail("acquire", bad); code != "invalid_argument" {
				t.Errorf("acquire %v: %s", bad, code)
			}
		}
	})
}

func TestSessionAcquireMany(t *testing.T) {
	backends(t, func(t *testing.T, b *backend) {
		a := &api{t, b.other(0), b.tenantKey}
		admin := &api{t, b.other(0), b.adminKey}
		s := dialSession(t, b.urls[0], b.tenantKey)

		// Granted at once; each lease's end is pushed.
		ls := sessionLeases(t, s.call("acquire_many", map[string]any{"holder_id": "h", "locks": locks("sm/a", "sm/b")}))
		if len(ls) != 2 || ls[0]["name"] != "sm/a" || ls[1]["name"] != "sm/b" || ls[0]["lease_id"] == nil {
			t.Fatalf("leases %v", ls)
		}
		for _, n := range []string{"sm%2Fa", "sm%2Fb"} {
			admin.must(200, "POST", "/v1/locks/"+n+"/force-release?tenant=default", nil)
		}
		ended := map[any]bool{}
		for range ls {
			le := s.leaseEnded()
			if le["reason"] != "force_released" {
				t.Errorf("push %v", le)
			}
			ended[le["lease_id"]] = true
		}
		if !ended[ls[0]["lease_id"]] || !ended[ls[1]["lease_id"]] {
			t.Errorf("pushed the ends of %v, want those of %v", ended, leaseIDs(ls))
		}

		// Queued, then granted once the blocker leaves.
		blocker := a.acquire("sm/c", "other", nil)
		id := s.send("acquire_many", map[string]any{"holder_id": "h", "wait_ms": 30000, "locks": locks("sm/c", "sm/d")})
		dlmtest.Eventually(t, "the acquire_many is queued", func() bool {
			return len(a.inspectLock("sm/d")["waiters"].([]any)) == 1
		})
		a.must(200, "DELETE", "/v1/leases/"+blocker["lease_id"].(string), nil)
		r := s.wait(id)
		res, _ := r["result"].(map[string]any)
		if got := sessionLeases(t, res); len(got) != 2 || got[0]["name"] != "sm/c" {
			t.Errorf("queued acquire_many = %v", r)
		}

		// Queued, then cancelled: it leaves every queue.
		a.acquire("sm/e", "other", nil)
		id = s.send("acquire_many", map[string]any{"holder_id": "h", "wait_ms": 30000, "locks": locks("sm/f", "sm/e")})
		dlmtest.Eventually(t, "the acquire_many is queued", func() bool {
			return len(a.inspectLock("sm/f")["waiters"].([]any)) == 1
		})
		s.call("cancel", map[string]any{"target": id})
		if code := errCode(t, s.wait(id)); code != "cancelled" {
			t.Errorf("cancelled acquire_many: %s", code)
		}
		for _, n := range []string{"sm/e", "sm/f"} {
			if v := a.inspectLock(n); len(v["waiters"].([]any)) != 0 || n == "sm/f" && len(v["holders"].([]any)) != 0 {
				t.Errorf("%s after the cancel: %v", n, v)
			}
		}

		if code := s.fail("acquire_many", map[string]any{"holder_id": "h", "locks": locks("sm/g")}); code != "invalid_argument" {
			t.Errorf("acquire_many of one lock: %s", code)
		}
		if code := s.fail("acquire_many", map[string]any{"holder_id": "h", "name": "sm/g", "locks": locks("sm/g", "sm/h")}); code != "invalid_argument" {
			t.Errorf("acquire_many with a name: %s", code)
		}
	})
}

// TestSessionAcquireManyReleaseOnClose: release_on_close applies to every
// lease of an acquire_many.
func TestSessionAcquireManyReleaseOnClose(t *testing.T) {
	backends(t, func(t *testing.T, b *backend) {
		a := &api{t, b.other(0), b.tenantKey}
		s := dialSession(t, b.urls[0], b.tenantKey)
		s.call("acquire_many", map[string]any{"holder_id": "h", "release_on_close": true, "locks": locks("sroc/a", "sroc/b", "sroc/c")})
		s.c.Close(websocket.StatusNormalClosure, "")
		for _, n := range []string{"sroc/a", "sroc/b", "sroc/c"} {
			dlmtest.Eventually(t, n+" is released", func() bool {
				return len(a.inspectLock(n)["holders"].([]any)) == 0
			})
		}
	})
}
