package engine_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/dlmtest"
	"github.com/dlmhq/dlm/engine"
)

func many(holder string, wait time.Duration, names ...string) engine.AcquireManyRequest {
	r := engine.AcquireManyRequest{Tenant: tenant, HolderID: holder, TTL: time.Minute, Wait: wait}
	for _, n := range names {
		r.Locks = append(r.Locks, engine.LockSpec{Key: key(n)})
	}
	return r
}

// queuedOn reports how many waiters the lock has.
func queuedOn(t *testing.T, e *engine.Engine, name string) int {
	v, err := e.Inspect(t.Context(), key(name))
	if err != nil {
		t.Fatal(err)
	}
	return len(v.Waiters)
}

// A blocking multi-lock acquire is granted once the last of its locks is
// released, by the engine's follow-up decision, on every lock at once.
func TestAcquireManyWaitsForAllItsLocks(t *testing.T) {
	clock := dlmtest.NewManualClock(epoch)
	e, _ := open(t, clock, engine.Options{})
	ctx := t.Context()
	x, _, err := e.Acquire(ctx, req("a", "x", time.Hour, 0))
	if err != nil {
		t.Fatal(err)
	}
	y, _, err := e.Acquire(ctx, req("b", "y", time.Hour, 0))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.AcquireMany(ctx, many("m", 0, "a", "b")); !errors.Is(err, dlm.ErrLockConflict) || err.(*dlm.Error).Lock != "a" {
		t.Fatalf("try once on held locks: %v; want lock_conflict naming a", err)
	}
	type result struct {
		leases []dlm.Lease
		err    error
	}
	got := make(chan result, 1)
	go func() {
		ls, _, err := e.AcquireMany(ctx, many("m", time.Minute, "a", "b"))
		got <- result{ls, err}
	}()
	dlmtest.Eventually(t, "the group queued on a and b", func() bool { return queuedOn(t, e, "a") == 1 && queuedOn(t, e, "b") == 1 })
	if _, err := e.Release(ctx, tenant, x.ID); err != nil {
		t.Fatal(err)
	}
	if v, _ := e.Inspect(ctx, key("a")); len(v.Holders) != 0 || len(v.Waiters) != 1 {
		t.Fatalf("a after its release: %d holders, %d waiters; want the group still waiting for b", len(v.Holders), len(v.Waiters))
	}
	clock.Advance(time.Second)
	if _, err := e.Release(ctx, tenant, y.ID); err != nil {
		t.Fatal(err)
	}
	r := <-got
	if r.err != nil {
		t.Fatal(r.err)
	}
	if len(r.leases) != 2 || r.leases[0].Key != key("a") || r.leases[1].Key != key("b") ||
		!r.leases[0].AcquiredAt.Equal(epoch.Add(time.Second)) || !r.leases[1].AcquiredAt.Equal(r.leases[0].AcquiredAt) {
		t.Fatalf("leases %+v; want a and b, in order, granted together at the second release", r.leases)
	}
}

// A waiter behind a lock-delay is granted when the delay ends, by the
// sweeper, and not before.
func TestLockDelayOnTheManualClock(t *testing.T) {
	clock := dlmtest.NewManualClock(epoch)
	e, _ := open(t, clock, engine.Options{})
	ctx := t.Context()
	r := req("x", "a", 10*time.Second, 0)
	r.LockDelay = 3 * time.Second
	a, _, err := e.Acquire(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan dlm.Lease, 1)
	go func() {
		l, _, err := e.Acquire(ctx, req("x", "b", 10*time.Second, time.Minute))
		if err != nil {
			t.Error(err)
		}
		got <- l
	}()
	if !clock.WaitTimers(2, ctx.Done()) {
		t.Fatal(ctx.Err())
	}
	for {
		clock.Advance(time.Second)
		if !clock.Now().Before(a.ExpiresAt.Add(3 * time.Second)) {
			break
		}
		// The sweep after this advance has run once both sleep again.
		if !clock.WaitTimers(2, ctx.Done()) {
			t.Fatal(ctx.Err())
		}
		select {
		case l := <-got:
			t.Fatalf("granted at %v, before the lock-delay after %v ended", l.AcquiredAt, a.ExpiresAt)
		default:
		}
	}
	b := <-got
	if !b.AcquiredAt.Equal(a.ExpiresAt.Add(3 * time.Second)) {
		t.Fatalf("granted at %v; want the end of the lock-delay, %v", b.AcquiredAt, a.ExpiresAt.Add(3*time.Second))
	}
}

// Blocking multi-lock acquires of the same locks in opposite orders, many
// at once and repeated, all complete: they cannot deadlock.
func TestAcquireManyOppositeOrdersComplete(t *testing.T) {
	e, _ := open(t, dlm.SystemClock{}, engine.Options{})
	ctx := t.Context()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			names := []string{"a", "b", "c"}
			if g%2 == 1 {
				names = []string{"c", "b", "a"}
			}
			for i := range 15 {
				ls, _, err := e.AcquireMany(ctx, many(fmt.Sprintf("g%d-%d", g, i), time.Minute, names...))
				if err != nil {
					t.Error(err)
					return
				}
				for _, l := range ls {
					if _, err := e.Release(ctx, tenant, l.ID); err != nil {
						t.Error(err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
}
