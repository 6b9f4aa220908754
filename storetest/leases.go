package storetest

import (
	"testing"
	"time"

	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/dlmtest"
	"github.com/dlmhq/dlm/engine"
)

func testAcquireRelease(t *testing.T, open suite) {
	e := newEnv(t, open, engine.Options{})
	r := areq("orders/42", "worker-7", dlm.Exclusive)
	r.TTL = 30 * time.Second
	l, replayed, err := e.engine.Acquire(e.ctx, r)
	if err != nil || replayed {
		t.Fatalf("acquire: %v (replayed %v)", err, replayed)
	}
	if l.ID == "" || l.Token < 1 || l.Mode != dlm.Exclusive || l.HolderID != "worker-7" || l.Key != k("orders/42") || l.Tenant != tenant {
		t.Errorf("lease = %+v", l)
	}
	if got := l.ExpiresAt.Sub(l.AcquiredAt); got != 30*time.Second || l.TTL != 30*time.Second {
		t.Errorf("lease lasts %v with TTL %v, want 30s", got, l.TTL)
	}
	got, err := e.engine.Lease(e.ctx, tenant, l.ID)
	if err != nil || got.ID != l.ID || got.Token != l.Token || !got.ExpiresAt.Equal(l.ExpiresAt) {
		t.Errorf("get lease = %+v, %v; want %+v", got, err, l)
	}
	v := e.inspect("orders/42")
	if v.Token != l.Token || len(v.Holders) != 1 || v.Holders[0].ID != l.ID {
		t.Errorf("inspect = %+v", v)
	}
	ended, err := e.engine.Release(e.ctx, tenant, l.ID)
	if err != nil || ended.ID != l.ID {
		t.Fatalf("release = %+v, %v", ended, err)
	}
	if v := e.inspect("orders/42"); len(v.Holders) != 0 || v.Token != l.Token {
		t.Errorf("after release, inspect = %+v; want no holders, token %d", v, l.Token)
	}
	l2 := e.acquire(areq("orders/42", "worker-8", dlm.Exclusive))
	if want := l.Token + 1; l2.Token != want {
		t.Errorf("second token = %d, want %d", l2.Token, want)
	}
	// A never-used name answers with empty lists, not an error.
	if v := e.inspect("never/used"); v.Token != 0 || len(v.Holders) != 0 || len(v.Waiters) != 0 {
		t.Errorf("never-used lock = %+v", v)
	}
}

func testConflictReportsHolders(t *testing.T, open suite) {
	e := newEnv(t, open, engine.Options{})
	held := e.acquire(areq("a", "one", dlm.Exclusive))
	_, _, err := e.engine.Acquire(e.ctx, areq("a", "two", dlm.Shared))
	de := wantCode(t, err, dlm.CodeLockConflict)
	if len(de.Holders) != 1 || de.Holders[0].HolderID != "one" || de.Holders[0].Token != held.Token {
		t.Errorf("holders = %+v", de.Holders)
	}
	// Not re-entrant: the same holder without the same key conflicts too.
	_, _, err = e.engine.Acquire(e.ctx, areq("a", "one", dlm.Exclusive))
	wantCode(t, err, dlm.CodeLockConflict)

	dry, err := e.engine.DryRun(e.ctx, areq("a", "two", dlm.Exclusive))
	if err != nil || dry.WouldGrant || len(dry.Holders) != 1 || dry.Waiters != 0 {
		t.Errorf("dry run = %+v, %v", dry, err)
	}
	e.release(held)
	dry, err = e.engine.DryRun(e.ctx, areq("a", "two", dlm.Exclusive))
	if err != nil || !dry.WouldGrant {
		t.Errorf("dry run after release = %+v, %v", dry, err)
	}
	if v := e.inspect("a"); v.Token != held.Token {
		t.Errorf("dry run changed the lock: %+v", v)
	}
}

func testSharedTokens(t *testing.T, open suite) {
	e := newEnv(t, open, engine.Options{})
	seen := map[int64]bool{}
	for _, h := range []string{"r1", "r2", "r3"} {
		l := e.acquire(areq("s", h, dlm.Shared))
		if seen[l.Token] {
			t.Errorf("token %d given twice", l.Token)
		}
		seen[l.Token] = true
	}
	if v := e.inspect("s"); len(v.Holders) != 3 {
		t.Errorf("holders = %d, want 3", len(v.Holders))
	}
	_, _, err := e.engine.Acquire(e.ctx, areq("s", "w", dlm.Exclusive))
	wantCode(t, err, dlm.CodeLockConflict)
}

func testLeaseEndedReasons(t *testing.T, open suite) {
	e := newClockedEnv(t, open, engine.Options{})
	released := e.acquire(areq("r", "h", dlm.Exclusive))
	e.release(released)
	forced := e.acquire(areq("f", "h", dlm.Exclusive))
	if _, err := e.engine.ForceRelease(e.ctx, k("f")); err != nil {
		t.Fatal(err)
	}
	short := areq("x", "h", dlm.Exclusive)
	short.TTL = 100 * time.Millisecond
	expired := e.acquire(short)
	e.pass(short.TTL, "the short lease expires", func() bool {
		_, err := e.engine.Lease(e.ctx, tenant, expired.ID)
		return err != nil
	})
	for _, tt := range []struct {
		l    dlm.Lease
		want dlm.EndReason
	}{{released, dlm.Released}, {forced, dlm.ForceReleased}, {expired, dlm.Expired}} {
		_, err := e.engine.Lease(e.ctx, tenant, tt.l.ID)
		if de := wantCode(t, err, dlm.CodeLeaseEnded); de.Reason != tt.want {
			t.Errorf("get %s lease: reason %v", tt.want, de.Reason)
		}
		_, err = e.engine.Release(e.ctx, tenant, tt.l.ID)
		if de := wantCode(t, err, dlm.CodeLeaseEnded); de.Reason != tt.want {
			t.Errorf("release %s lease: reason %v", tt.want, de.Reason)
		}
		_, err = e.engine.Renew(e.ctx, tenant, tt.l.ID, 0)
		if de := wantCode(t, err, dlm.CodeLeaseEnded); de.Reason != tt.want {
			t.Errorf("renew %s lease: reason %v", tt.want, de.Reason)
		}
	}
	_, err := e.engine.Release(e.ctx, tenant, "no-such-lease")
	wantCode(t, err, dlm.CodeNotFound)
}

func testRenew(t *testing.T, open suite) {
	e := newEnv(t, open, engine.Options{})
	l := e.acquire(areq("r", "h", dlm.Exclusive))
	got, err := e.engine.Renew(e.ctx, tenant, l.ID, 0)
	if err != nil || got.Token != l.Token || got.ExpiresAt.Before(l.ExpiresAt) || got.TTL != l.TTL {
		t.Errorf("renew = %+v, %v", got, err)
	}
	got, err = e.engine.Renew(e.ctx, tenant, l.ID, 2*time.Hour)
	if err != nil || got.TTL != 2*time.Hour || got.ExpiresAt.Sub(l.ExpiresAt) < time.Hour {
		t.Errorf("renew with ttl = %+v, %v", got, err)
	}
	if _, err := e.engine.Renew(e.ctx, tenant, l.ID, time.Millisecond); err == nil {
		t.Errorf("renew with a 1ms ttl succeeded")
	} else {
		wantCode(t, err, dlm.CodeInvalidArgument)
	}
	if v := e.inspect("r"); !v.Holders[0].ExpiresAt.Equal(got.ExpiresAt) {
		t.Errorf("inspect shows expiry %v, want %v", v.Holders[0].ExpiresAt, got.ExpiresAt)
	}
}

func testExpiredLeaseIsNotHeld(t *testing.T, open suite) {
	e := newClockedEnv(t, open, engine.Options{})
	r := areq("e", "h", dlm.Exclusive)
	r.TTL = 100 * time.Millisecond
	first := e.acquire(r)
	if e.clock != nil {
		e.clock.Advance(r.TTL - time.Millisecond)
		_, _, err := e.engine.Acquire(e.ctx, areq("e", "h2", dlm.Exclusive))
		wantCode(t, err, dlm.CodeLockConflict) // a millisecond before its expiry
		e.clock.Advance(time.Millisecond)
	}
	// Acquire again until granted: the expired lease must never block
	// past its expiry, and the new token is above the old one.
	var second dlm.Lease
	e.pass(0, "the lock is free again", func() bool {
		l, _, err := e.engine.Acquire(e.ctx, areq("e", "h2", dlm.Exclusive))
		second = l
		return err == nil
	})
	if second.Token <= first.Token {
		t.Errorf("token after expiry %d, before %d", second.Token, first.Token)
	}
	if second.AcquiredAt.Before(first.ExpiresAt) {
		t.Errorf("granted at %v, before the first lease expired at %v", second.AcquiredAt, first.ExpiresAt)
	}
	if _, err := e.engine.Renew(e.ctx, tenant, first.ID, 0); err == nil {
		t.Errorf("an expired lease was renewed")
	}
}

func testForceRelease(t *testing.T, open suite) {
	e := newEnv(t, open, engine.Options{})
	a := e.acquire(areq("f", "a", dlm.Shared))
	b := e.acquire(areq("f", "b", dlm.Shared))
	done := make(chan dlm.Lease, 1)
	go func() {
		w := areq("f", "w", dlm.Exclusive)
		w.Wait = 10 * time.Second
		l, _, err := e.engine.Acquire(e.ctx, w)
		if err != nil {
			t.Errorf("waiter: %v", err)
		}
		done <- l
	}()
	dlmtest.Eventually(t, "the waiter queues", func() bool { return len(e.inspect("f").Waiters) == 1 })
	ended, err := e.engine.ForceRelease(e.ctx, k("f"))
	if err != nil || len(ended) != 2 {
		t.Fatalf("force release = %+v, %v", ended, err)
	}
	w := <-done
	if w.Token <= max(a.Token, b.Token) {
		t.Errorf("waiter token %d not above %d, %d", w.Token, a.Token, b.Token)
	}
	_, err = e.engine.Renew(e.ctx, tenant, a.ID, 0)
	if de := wantCode(t, err, dlm.CodeLeaseEnded); de.Reason != dlm.ForceReleased {
		t.Errorf("reason = %v", de.Reason)
	}
}

func testFencingSurvivesReopen(t *testing.T, open suite) {
	e := newEnv(t, open, engine.Options{})
	var last int64
	for range 3 {
		l := e.acquire(areq("fence", "h", dlm.Exclusive))
		e.release(l)
		last = l.Token
	}
	held := areq("held", "h", dlm.Exclusive)
	held.TTL = time.Hour
	h := e.acquire(held)
	e.restart(engine.Options{})
	l := e.acquire(areq("fence", "h", dlm.Exclusive))
	if l.Token <= last {
		t.Errorf("token after restart %d, before %d", l.Token, last)
	}
	got, err := e.engine.Lease(e.ctx, tenant, h.ID)
	if err != nil || got.Token != h.Token {
		t.Errorf("held lease after restart = %+v, %v", got, err)
	}
	_, _, err = e.engine.Acquire(e.ctx, areq("held", "other", dlm.Exclusive))
	wantCode(t, err, dlm.CodeLockConflict)
}
