package dlmhttp_test

import (
	"fmt"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dlmhq/dlm/dlmtest"
)

// The lock features over HTTP: semaphores (limit), lock-delay, max hold
// (this file) and multi-lock acquire (features_multi_test.go), on SQLite
// and on a PostgreSQL cluster, where the waiters ask another instance.

// lockPath is the path of lock name.
func lockPath(name string) string { return "/v1/locks/" + url.PathEscape(name) }

// inspectLock returns the view of lock name.
func (a *api) inspectLock(name string) map[string]any {
	a.t.Helper()
	return a.must(200, "GET", lockPath(name), nil)
}

// holderIDs returns the holder_id of each entry of list, a view's holders
// or waiters.
func holderIDs(list any) []string {
	var ids []string
	for _, x := range list.([]any) {
		ids = append(ids, x.(map[string]any)["holder_id"].(string))
	}
	return ids
}

// acquireAsync sends an acquire of name by holder and returns where its
// lease arrives; a refusal fails the test and sends nil.
func (a *api) acquireAsync(name, holder string, extra map[string]any) chan map[string]any {
	ch := make(chan map[string]any, 1)
	body := map[string]any{"holder_id": holder}
	for k, v := range extra {
		body[k] = v
	}
	go func() {
		r := a.do("POST", lockPath(name)+"/acquire", body)
		if r.status != 200 {
			a.t.Errorf("acquire %s by %s = %d %s", name, holder, r.status, r.body)
			ch <- nil
			return
		}
		ch <- r.json(a.t)
	}()
	return ch
}

// wantInvalid checks that r is 400 invalid_argument naming field.
func wantInvalid(t *testing.T, what string, r *response, field string) {
	t.Helper()
	if r.status != 400 || r.errorCode(t) != "invalid_argument" || r.details(t)["field"] != field {
		t.Errorf("%s = %d %s, want 400 naming %s", what, r.status, r.body, field)
	}
}

// TestSemaphore: a 3-permit semaphore under 16 concurrent clients never has
// more than 3 holders; its waiters are granted in FIFO order; a request
// with another limit is refused.
func TestSemaphore(t *testing.T) {
	backends(t, func(t *testing.T, b *backend) {
		a := &api{t, b.urls[0], b.tenantKey}
		const limit, clients, rounds = 3, 16, 4
		sem := map[string]any{"mode": "shared", "limit": limit, "wait_ms": 30000}

		// in counts the clients that hold a permit: raised after a grant,
		// lowered before the release, so it never exceeds the holders.
		var in, most atomic.Int64
		var wg sync.WaitGroup
		for c := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				a := &api{t, b.urls[c%len(b.urls)], b.tenantKey}
				for range rounds {
					l := <-a.acquireAsync("sem", fmt.Sprintf("c%d", c), sem)
					if l == nil {
						return
					}
					n := in.Add(1)
					for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
					}
					if n > limit {
						t.Errorf("%d clients hold a permit at once", n)
					}
					v := a.inspectLock("sem")
					if h := len(v["holders"].([]any)); h > limit || v["limit"] != float64(limit) {
						t.Errorf("inspect while held: %d holders, limit %v", h, v["limit"])
					}
					if l["limit"] != float64(limit) {
						t.Errorf("lease %v, want limit %d", l, limit)
					}
					in.Add(-1)
					a.must(200, "DELETE", "/v1/leases/"+l["lease_id"].(string), nil)
				}
			}()
		}
		wg.Wait()
		t.Logf("at most %d of %d clients held a permit at once", most.Load(), clients)

		// FIFO: with every permit taken, waiters are granted in the order
		// they queued, one per permit given back.
		var held []string
		for i := range limit {
			held = append(held, a.acquire("fifo", fmt.Sprintf("h%d", i), sem)["lease_id"].(string))
		}
		const waiters = 5
		granted := make([]chan map[string]any, waiters)
		for i := range waiters {
			granted[i] = (&api{t, b.urls[i%len(b.urls)], b.tenantKey}).acquireAsync("fifo", fmt.Sprintf("w%d", i), sem)
			dlmtest.Eventually(t, fmt.Sprintf("w%d is queued", i), func() bool {
				return len(a.inspectLock("fifo")["waiters"].([]any)) == i+1
			})
		}
		v := a.inspectLock("fifo")
		if got := strings.Join(holderIDs(v["waiters"]), " "); got != "w0 w1 w2 w3 w4" {
			t.Fatalf("queue %s", got)
		}
		if w := v["waiters"].([]any)[0].(map[string]any); w["limit"] != float64(limit) {
			t.Errorf("waiter %v, want limit %d", w, limit)
		}
		for i := range waiters {
			a.must(200, "DELETE", "/v1/leases/"+held[0], nil)
			l := <-granted[i]
			if l == nil {
				t.FailNow()
			}
			if l["holder_id"] != fmt.Sprintf("w%d", i) {
				t.Fatalf("grant %d went to %v", i, l["holder_id"])
			}
			held = append(held[1:], l["lease_id"].(string))
			if q := holderIDs(a.inspectLock("fifo")["waiters"]); len(q) != waiters-1-i {
				t.Errorf("after grant %d the queue is %v", i, q)
			}
		}

		// Every request on a semaphore gives its limit; none other is taken.
		for _, tc := range []struct {
			what string
			body map[string]any
		}{
			{"another limit", map[string]any{"holder_id": "x", "mode": "shared", "limit": 4}},
			{"no limit", map[string]any{"holder_id": "x", "mode": "shared"}},
			{"exclusive", map[string]any{"holder_id": "x"}},
		} {
			wantInvalid(t, tc.what, a.do("POST", lockPath("fifo")+"/acquire", tc.body), "limit")
		}
		a.acquire("plain", "p", map[string]any{"mode": "shared"})
		wantInvalid(t, "a limit on a held unbounded lock", a.do("POST", lockPath("plain")+"/acquire",
			map[string]any{"holder_id": "x", "mode": "shared", "limit": 3}), "limit")
		for _, bad := range []any{0, -1, 10001, nil, "3"} {
			wantInvalid(t, fmt.Sprintf("limit %v", bad), a.do("POST", lockPath("new")+"/acquire",
				map[string]any{"holder_id": "x", "mode": "shared", "limit": bad}), "limit")
		}
		wantInvalid(t, "a limit without mode shared", a.do("POST", lockPath("new")+"/acquire",
			map[string]any{"holder_id": "x", "limit": 3}), "limit")
	})
}

// endedAt returns the time of the last event of type typ on lock name.
func endedAt(t *testing.T, a *api, name, typ string) time.Time {
	t.Helper()
	evs := a.must(200, "GET", "/v1/events?name="+url.QueryEscape(name), nil)["events"].([]any)
	for i := len(evs) - 1; i >= 0; i-- {
		if ev := evs[i].(map[string]any); ev["type"] == typ {
			return wireTime(t, ev["at"])
		}
	}
	t.Fatalf("no %s event on %s", typ, name)
	return time.Time{}
}

// TestLockDelay: after a lease with lock_delay_ms ends by expiry or
// force-release, its waiter is granted no earlier than the end plus the
// delay; after a release, at once.
func TestLockDelay(t *testing.T) {
	backends(t, func(t *testing.T, b *backend) {
		a := &api{t, b.urls[0], b.tenantKey}
		admin := &api{t, b.urls[0], b.adminKey}
		const delay = 300 * time.Millisecond
		// waiter queues an acquire of name and returns where its lease
		// arrives.
		waiter := func(t *testing.T, name string) chan map[string]any {
			a := &api{t, b.other(0), a.key}
			ch := a.acquireAsync(name, "next", map[string]any{"wait_ms": 30000})
			dlmtest.Eventually(t, "the waiter is queued", func() bool {
				return len(a.inspectLock(name)["waiters"].([]any)) == 1
			})
			return ch
		}

		t.Run("expiry", func(t *testing.T) {
			a := &api{t, a.base, a.key}
			first := a.acquire("delay/expiry", "lost", map[string]any{"ttl_ms": 100, "lock_delay_ms": delay.Milliseconds()})
			if first["lock_delay_ms"] != float64(delay.Milliseconds()) {
				t.Errorf("lease %v, want lock_delay_ms", first)
			}
			next := <-waiter(t, "delay/expiry")
			end := wireTime(t, first["expires_at"])
			if got := wireTime(t, next["acquired_at"]); got.Before(end.Add(delay)) {
				t.Errorf("granted at %v, %v after the expiry; want at least %v", got, got.Sub(end), delay)
			}
		})

		t.Run("force-release", func(t *testing.T) {
			a := &api{t, a.base, a.key}
			admin := &api{t, admin.base, admin.key}
			a.acquire("delay/force", "lost", map[string]any{"lock_delay_ms": delay.Milliseconds()})
			ch := waiter(t, "delay/force")
			admin.must(200, "POST", lockPath("delay/force")+"/force-release?tenant=default", nil)
			next := <-ch
			end := endedAt(t, a, "delay/force", "force_released")
			if got := wireTime(t, next["acquired_at"]); got.Before(end.Add(delay)) {
				t.Errorf("granted at %v, %v after the force-release; want at least %v", got, got.Sub(end), delay)
			}
		})

		t.Run("in force", func(t *testing.T) {
			a := &api{t, a.base, a.key}
			admin := &api{t, admin.base, admin.key}
			a.acquire("delay/held", "lost", map[string]any{"lock_delay_ms": 60000})
			admin.must(200, "POST", lockPath("delay/held")+"/force-release?tenant=default", nil)
			end := endedAt(t, a, "delay/held", "force_released")
			r := a.wantError(409, "lock_conflict", "POST", lockPath("delay/held")+"/acquire", map[string]any{"holder_id": "x"})
			if !strings.Contains(string(r.body), "until") || len(r.details(t)["holders"].([]any)) != 0 {
				t.Errorf("conflict in a lock-delay: %s", r.body)
			}
			if until := wireTime(t, a.inspectLock("delay/held")["lock_delay_until"]); !until.Equal(end.Add(time.Minute)) {
				t.Errorf("lock_delay_until %v, want %v", until, end.Add(time.Minute))
			}
		})

		t.Run("release", func(t *testing.T) {
			a := &api{t, a.base, a.key}
			// A delay the waiter could not outwait: a release must not start it.
			first := a.acquire("delay/release", "done", map[string]any{"lock_delay_ms": 60000})
			ch := waiter(t, "delay/release")
			a.must(200, "DELETE", "/v1/leases/"+first["lease_id"].(string), nil)
			next := <-ch
			end := endedAt(t, a, "delay/release", "released")
			if got := wireTime(t, next["acquired_at"]); got.Sub(end) >= time.Minute {
				t.Errorf("granted %v after the release", got.Sub(end))
			}
			if v := a.inspectLock("delay/release"); v["lock_delay_until"] != nil {
				t.Errorf("lock-delay after a release: %v", v)
			}
		})

		for _, bad := range []any{-1, 60001, nil, 1.5} {
			wantInvalid(t, fmt.Sprintf("lock_delay_ms %v", bad), a.do("POST", lockPath("delay/bad")+"/acquire",
				map[string]any{"holder_id": "x", "lock_delay_ms": bad}), "lock_delay_ms")
		}
		if r := a.do("POST", lockPath("delay/bad")+"/acquire", map[string]any{"holder_id": "x", "lock_delay_ms": 60001}); r.details(t)["max"] != 60000.0 {
			t.Errorf("lock_delay_ms over the bound: details %v, want max 60000", r.details(t))
		}
	})
}

// TestMaxHold: expires_at never passes acquired_at + max_hold_ms, neither
// at the grant nor on a renew, which answers 200 with the capped time.
func TestMaxHold(t *testing.T) {
	backends(t, func(t *testing.T, b *backend) {
		a := &api{t, b.urls[0], b.tenantKey}
		l := a.acquire("hold", "h", map[string]any{"ttl_ms": 1000, "max_hold_ms": 5000})
		acquired := wireTime(t, l["acquired_at"])
		if l["max_hold_ms"] != 5000.0 || !wireTime(t, l["expires_at"]).Equal(acquired.Add(time.Second)) {
			t.Errorf("lease %v, want max_hold_ms 5000 and a full first TTL", l)
		}
		r := a.must(200, "POST", "/v1/leases/"+l["lease_id"].(string)+"/renew", map[string]any{"ttl_ms": 60000})
		if exp := wireTime(t, r["expires_at"]); !exp.Equal(acquired.Add(5 * time.Second)) {
			t.Errorf("renewed to %v after the grant, want the cap 5s", exp.Sub(acquired))
		}
		if r["ttl_ms"] != 60000.0 || r["max_hold_ms"] != 5000.0 {
			t.Errorf("renewed lease %v", r)
		}

		capped := a.acquire("hold/first", "h", map[string]any{"ttl_ms": 60000, "max_hold_ms": 1000})
		if exp := wireTime(t, capped["expires_at"]); !exp.Equal(wireTime(t, capped["acquired_at"]).Add(time.Second)) {
			t.Errorf("first grant expires %v after it, want the cap 1s", exp.Sub(wireTime(t, capped["acquired_at"])))
		}

		for _, bad := range []any{0, 99, -1, nil} {
			wantInvalid(t, fmt.Sprintf("max_hold_ms %v", bad), a.do("POST", lockPath("hold/bad")+"/acquire",
				map[string]any{"holder_id": "x", "max_hold_ms": bad}), "max_hold_ms")
		}
	})
}
