package dlmhttp_test

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/dlmhq/dlm/dlmtest"
)

// locks is the locks field of a multi-lock acquire of names.
func locks(names ...string) []map[string]any {
	ls := make([]map[string]any, len(names))
	for i, n := range names {
		ls[i] = map[string]any{"name": n}
	}
	return ls
}

// acquireMany sends POST /v1/acquire with body.
func (a *api) acquireMany(body map[string]any, hdr ...string) *response {
	a.t.Helper()
	return a.do("POST", "/v1/acquire", body, hdr...)
}

// leasesOf returns the leases of a granted multi-lock acquire, failing
// unless r is one.
func leasesOf(t *testing.T, r *response) []map[string]any {
	t.Helper()
	if r.status != 200 {
		t.Fatalf("multi-lock acquire = %d %s, want 200", r.status, r.body)
	}
	var ls []map[string]any
	for _, l := range r.json(t)["leases"].([]any) {
		ls = append(ls, l.(map[string]any))
	}
	return ls
}

func leaseIDs(ls []map[string]any) []string {
	ids := make([]string, len(ls))
	for i, l := range ls {
		ids[i], _ = l["lease_id"].(string)
	}
	return ids
}

func TestAcquireMany(t *testing.T) {
	backends(t, func(t *testing.T, b *backend) {
		a := &api{t, b.urls[0], b.tenantKey}
		body := map[string]any{"holder_id": "h", "ttl_ms": 60000, "locks": []map[string]any{
			{"name": "many/b"}, {"name": "many/a", "mode": "shared"}, {"name": "many/g", "scope": "global"},
		}}
		ls := leasesOf(t, a.acquireMany(body))
		if len(ls) != 3 {
			t.Fatalf("leases %v", ls)
		}
		for i, want := range []struct{ name, mode, scope string }{{"many/b", "exclusive", "tenant"}, {"many/a", "shared", "tenant"}, {"many/g", "exclusive", "global"}} {
			wantKeys(t, "lease", ls[i], ownerLeaseKeys)
			if l := ls[i]; l["name"] != want.name || l["mode"] != want.mode || l["scope"] != want.scope || l["holder_id"] != "h" || l["ttl_ms"] != 60000.0 || !grantToken(t, l, 0) {
				t.Errorf("lease %d = %v, want %v", i, l, want)
			}
		}
		if ls[0]["acquired_at"] != ls[1]["acquired_at"] || ls[1]["acquired_at"] != ls[2]["acquired_at"] {
			t.Errorf("leases granted at different times: %v", ls)
		}
		// Each lease is an ordinary lease.
		a.must(200, "POST", "/v1/leases/"+ls[0]["lease_id"].(string)+"/renew", nil)
		a.must(200, "DELETE", "/v1/leases/"+ls[0]["lease_id"].(string), nil)

		// Blocked by one lock, nothing is granted; the conflict names it.
		a.acquire("many/c", "other", nil)
		r := a.wantError(409, "lock_conflict", "POST", "/v1/acquire", map[string]any{"holder_id": "x", "locks": locks("many/free", "many/c")})
		if d := r.details(t); d["name"] != "many/c" || strings.Join(holderIDs(d["holders"]), " ") != "other" {
			t.Errorf("conflict details %v, want name many/c held by other", d)
		}
		if v := a.inspectLock("many/free"); len(v["holders"].([]any)) != 0 {
			t.Errorf("many/free was granted: %v", v)
		}
		r = a.wantError(409, "wait_timeout", "POST", "/v1/acquire", map[string]any{"holder_id": "x", "wait_ms": 100, "locks": locks("many/free", "many/c")})
		if d := r.details(t); d["name"] != "many/c" {
			t.Errorf("wait_timeout details %v, want name many/c", d)
		}
		if v := a.inspectLock("many/free"); len(v["holders"].([]any))+len(v["waiters"].([]any)) != 0 {
			t.Errorf("many/free after the time-out: %v", v)
		}

		sixtyFive := make([]string, 65)
		for i := range sixtyFive {
			sixtyFive[i] = fmt.Sprintf("n%d", i)
		}
		for _, tc := range []struct {
			what, field string
			body        map[string]any
		}{
			{"one lock", "locks", map[string]any{"holder_id": "x", "locks": locks("a")}},
			{"65 locks", "locks", map[string]any{"holder_id": "x", "locks": locks(sixtyFive...)}},
			{"no locks", "locks", map[string]any{"holder_id": "x"}},
			{"null locks", "locks", map[string]any{"holder_id": "x", "locks": nil}},
			{"a name twice", "locks", map[string]any{"holder_id": "x", "locks": locks("a", "b", "a")}},
			{"no holder", "holder_id", map[string]any{"locks": locks("a", "b")}},
			{"a lock not an object", "locks[1]", map[string]any{"holder_id": "x", "locks": []any{map[string]any{"name": "a"}, "b"}}},
			{"a lock without a name", "locks[1].name", map[string]any{"holder_id": "x", "locks": []any{map[string]any{"name": "a"}, map[string]any{}}}},
			{"a bad mode", "locks[0].mode", map[string]any{"holder_id": "x", "locks": []any{map[string]any{"name": "a", "mode": "x"}, map[string]any{"name": "b"}}}},
			{"an unknown lock field", "locks[0].ttl_ms", map[string]any{"holder_id": "x", "locks": []any{map[string]any{"name": "a", "ttl_ms": 1000}, map[string]any{"name": "b"}}}},
			{"limit 0", "locks[1].limit", map[string]any{"holder_id": "x", "locks": []any{map[string]any{"name": "a"}, map[string]any{"name": "b", "mode": "shared", "limit": 0}}}},
			{"ttl_ms 0", "ttl_ms", map[string]any{"holder_id": "x", "ttl_ms": 0, "locks": locks("a", "b")}},
			{"max_hold_ms 0", "max_hold_ms", map[string]any{"holder_id": "x", "max_hold_ms": 0, "locks": locks("a", "b")}},
			{"an unknown field", "name", map[string]any{"holder_id": "x", "name": "a", "locks": locks("a", "b")}},
		} {
			wantInvalid(t, tc.what, a.acquireMany(tc.body), tc.field)
		}
	})
}

// TestAcquireManyAllOrNothing: concurrent multi-lock and single acquires,
// try once, on a few names. Every multi-lock acquire gets all its locks or
// none (the event log shows each holder with all its grants or none), and
// nobody shares an exclusive lock.
func TestAcquireManyAllOrNothing(t *testing.T) {
	backends(t, func(t *testing.T, b *backend) {
		a := &api{t, b.urls[0], b.tenantKey}
		names := []string{"aon/a", "aon/b", "aon/c", "aon/d"}
		var owners sync.Map // lock name → holder_id, while held by a client
		var granted, refused atomic.Int64
		var wg sync.WaitGroup
		const clients, rounds = 8, 25
		for c := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				a := &api{t, b.urls[c%len(b.urls)], b.tenantKey}
				for r := range rounds {
					holder := fmt.Sprintf("c%d-%d", c, r)
					want := []string{names[(c+r)%4], names[(c+r+1+c%3)%4]}
					if c%4 == 3 {
						want = want[:1]
					}
					var res *response
					if len(want) == 1 {
						res = a.do("POST", lockPath(want[0])+"/acquire", map[string]any{"holder_id": holder})
					} else {
						res = a.acquireMany(map[string]any{"holder_id": holder, "locks": locks(want...)})
					}
					if res.status == 409 {
						refused.Add(1)
						continue
					}
					if res.status != 200 {
						t.Errorf("%s: %d %s", holder, res.status, res.body)
						return
					}
					granted.Add(1)
					var ids []string
					if len(want) == 1 {
						ids = []string{res.json(t)["lease_id"].(string)}
					} else {
						ids = leaseIDs(leasesOf(t, res))
					}
					for _, n := range want {
						if prev, taken := owners.LoadOrStore(n, holder); taken {
							t.Errorf("%s granted %s, which %s holds", holder, n, prev)
						}
					}
					for _, n := range want {
						owners.Delete(n)
					}
					for _, id := range ids {
						a.must(200, "DELETE", "/v1/leases/"+id, nil)
					}
				}
			}()
		}
		wg.Wait()
		t.Logf("%d granted, %d refused", granted.Load(), refused.Load())
		if granted.Load() == 0 || refused.Load() == 0 {
			t.Errorf("no contention: %d granted, %d refused", granted.Load(), refused.Load())
		}

		grants := map[string]int{}
		for _, ev := range grantsAdjacent(t, a, "aon/") {
			grants[ev["holder_id"].(string)]++
		}
		for holder, n := range grants {
			c := 0
			fmt.Sscanf(holder, "c%d-", &c)
			if want := 2 - min(c%4/3, 1); n != want {
				t.Errorf("%s was granted %d locks, want %d", holder, n, want)
			}
		}
		for _, n := range names {
			if v := a.inspectLock(n); len(v["holders"].([]any)) != 0 {
				t.Errorf("%s still held: %v", n, v)
			}
		}
	})
}

// TestAcquireManyNoDeadlock: blocking multi-lock acquires on the same
// names in opposite orders, many at once, round after round, all complete.
func TestAcquireManyNoDeadlock(t *testing.T) {
	backends(t, func(t *testing.T, b *backend) {
		forward := []string{"dl/a", "dl/b", "dl/c"}
		backward := slices.Clone(forward)
		slices.Reverse(backward)
		const rounds, perRound = 50, 6
		var in atomic.Int64
		for round := range rounds {
			var wg sync.WaitGroup
			for g := range perRound {
				order := forward
				if g%2 == 1 {
					order = backward
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					a := &api{t, b.urls[g%len(b.urls)], b.tenantKey}
					r := a.acquireMany(map[string]any{"holder_id": fmt.Sprintf("r%d-g%d", round, g), "wait_ms": 30000, "locks": locks(order...)})
					if r.status != 200 {
						t.Errorf("round %d, request %d: %d %s", round, g, r.status, r.body)
						return
					}
					if n := in.Add(1); n > 1 {
						t.Errorf("%d requests hold the locks at once", n)
					}
					in.Add(-1)
					for _, id := range leaseIDs(leasesOf(t, r)) {
						a.must(200, "DELETE", "/v1/leases/"+id, nil)
					}
				}()
			}
			wg.Wait()
			if t.Failed() {
				t.Fatalf("round %d failed", round)
			}
		}
		if n := len(grantsAdjacent(t, &api{t, b.urls[0], b.tenantKey}, "dl/")); n != rounds*perRound*len(forward) {
			t.Errorf("%d grants in the log, want %d", n, rounds*perRound*len(forward))
		}
	})
}

// grantsAdjacent reads the whole log under prefix and returns its
// "acquired" events, failing t unless the grants of each holder are
// adjacent (one commit writes a multi-lock acquire's grants together). The
// tests give every request a holder_id of its own.
func grantsAdjacent(t *testing.T, a *api, prefix string) []map[string]any {
	t.Helper()
	var all []map[string]any
	for since := 0.0; ; {
		page := a.must(200, "GET", fmt.Sprintf("/v1/events?prefix=%s&limit=1000&since=%.0f", prefix, since), nil)
		evs := page["events"].([]any)
		if len(evs) == 0 {
			break
		}
		for _, e := range evs {
			all = append(all, e.(map[string]any))
		}
		since = page["next_since"].(float64)
	}
	var grants []map[string]any
	last := map[string]int{} // holder → index in all of its latest grant
	for i, ev := range all {
		if ev["type"] != "acquired" {
			continue
		}
		h := ev["holder_id"].(string)
		if j, seen := last[h]; seen && j != i-1 {
			t.Errorf("%s's grants are not adjacent in the log: %v, then %v", h, all[j], ev)
		}
		last[h] = i
		grants = append(grants, ev)
	}
	return grants
}

// TestAcquireManyIdempotent: a retry with the same idempotency key replays
// the leases still held and tries for the rest; a retry while the first
// request is queued takes over its place.
func TestAcquireManyIdempotent(t *testing.T) {
	backends(t, func(t *testing.T, b *backend) {
		a := &api{t, b.urls[0], b.tenantKey}
		body := map[string]any{"holder_id": "h", "locks": locks("idem/a", "idem/b")}
		first := leasesOf(t, a.acquireMany(body, "Idempotency-Key", "k1"))
		again := a.acquireMany(body, "Idempotency-Key", "k1")
		if ls := leasesOf(t, again); !slices.Equal(leaseIDs(ls), leaseIDs(first)) || again.json(t)["replayed"] != true {
			t.Errorf("retry = %s, want the leases %v replayed", again.body, leaseIDs(first))
		}
		// With one lease ended, a retry replays the other and takes the
		// ended one's lock again.
		a.must(200, "DELETE", "/v1/leases/"+first[0]["lease_id"].(string), nil)
		body["idempotency_key"] = "k1"
		partial := a.acquireMany(body)
		ls := leasesOf(t, partial)
		if ls[1]["lease_id"] != first[1]["lease_id"] || ls[0]["lease_id"] == first[0]["lease_id"] || partial.json(t)["replayed"] != nil {
			t.Errorf("retry after a release = %s; first %v", partial.body, leaseIDs(first))
		}
		if code := a.acquireMany(map[string]any{"holder_id": "h", "idempotency_key": "k1", "locks": locks("idem/a", "idem/c")}).errorCode(t); code != "idempotency_key_reused" {
			t.Errorf("the key on other locks: %s, want idempotency_key_reused", code)
		}

		// A retry while queued: it takes over the first request's entries,
		// which leaves one entry per lock, and is granted once free.
		blocker := a.acquire("idem/q2", "blocker", nil)
		queued := map[string]any{"holder_id": "w", "wait_ms": 30000, "idempotency_key": "k2", "locks": locks("idem/q1", "idem/q2")}
		firstTry := make(chan *response, 1)
		go func() { firstTry <- a.acquireMany(queued) }()
		dlmtest.Eventually(t, "the first try is queued", func() bool {
			return len(a.inspectLock("idem/q1")["waiters"].([]any)) == 1
		})
		w := a.inspectLock("idem/q1")["waiters"].([]any)[0].(map[string]any)
		if w["locks"] != 2.0 {
			t.Errorf("multi-lock waiter %v, want locks 2", w)
		}
		retry := make(chan *response, 1)
		go func() { retry <- (&api{t, b.other(0), b.tenantKey}).acquireMany(queued) }()
		dlmtest.Eventually(t, "the retry takes over the queue entries", func() bool {
			q := a.inspectLock("idem/q1")["waiters"].([]any)
			return len(q) == 1 && q[0].(map[string]any)["wait_deadline"] != w["wait_deadline"]
		})
		a.must(200, "DELETE", "/v1/leases/"+blocker["lease_id"].(string), nil)
		got := leasesOf(t, <-retry)
		if got[0]["name"] != "idem/q1" || got[1]["name"] != "idem/q2" {
			t.Errorf("retry granted %v", got)
		}
		r := <-firstTry
		t.Logf("the first try, taken over, answered %d %s", r.status, r.body)
		for _, n := range []string{"idem/q1", "idem/q2"} {
			v := a.inspectLock(n)
			if strings.Join(holderIDs(v["holders"]), " ") != "w" || len(v["waiters"].([]any)) != 0 {
				t.Errorf("%s after the grant: %v", n, v)
			}
		}
	})
}
