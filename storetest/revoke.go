package storetest

import (
	"errors"
	"testing"
	"time"

	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/dlmtest"
	"github.com/dlmhq/dlm/engine"
)

func testRevokedKeyEndsWhatItHolds(t *testing.T, open suite) {
	e := newEnv(t, open, engine.Options{})
	Revocation(t, e.engine, e.engine)
}

// revocationLimit is far more than the KeyCacheTTL a revocation elsewhere
// takes to be noticed, for a busy machine; the time it took is logged.
const revocationLimit = 20 * time.Second

// Revocation checks that revoking a key through the engine revoker ends what
// the key holds open on the engine holder (the same engine, or another on
// the same store): a watch run under its KeyContext ends with
// ErrKeyRevoked, and a queued acquire is withdrawn with it, never granted.
// A KeyContext taken afterwards ends too, and the key is refused.
func Revocation(t *testing.T, revoker, holder *engine.Engine) {
	t.Helper()
	ctx := t.Context()
	const tn = "revoked"
	_, keyID, key, err := revoker.CreateTenant(ctx, tn)
	if err != nil {
		t.Fatal(err)
	}
	p, err := holder.Authenticate(ctx, key)
	if err != nil || p.KeyID != keyID {
		t.Fatalf("authenticate = %+v, %v; want key ID %s", p, err, keyID)
	}
	lk := dlm.Key{Namespace: tn, Name: "r"}
	first, _, err := holder.Acquire(ctx, engine.AcquireRequest{Tenant: tn, Key: lk, HolderID: "first", TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}

	wctx, wdone := holder.KeyContext(ctx, p.KeyID)
	defer wdone()
	w, err := holder.Watch(wctx, engine.EventQuery{Tenant: tn}, false)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	watchEnd := make(chan error, 1)
	go func() {
		for {
			if _, err := w.Next(wctx); err != nil {
				watchEnd <- err
				return
			}
		}
	}()
	actx, adone := holder.KeyContext(ctx, p.KeyID)
	defer adone()
	type result struct {
		lease dlm.Lease
		err   error
	}
	queued := make(chan result, 1)
	go func() {
		l, _, err := holder.Acquire(actx, engine.AcquireRequest{Tenant: tn, Key: lk, HolderID: "queued", TTL: time.Minute, Wait: 4 * time.Minute})
		queued <- result{l, err}
	}()
	dlmtest.Eventually(t, "the acquire is queued", func() bool {
		v, err := holder.Inspect(ctx, lk)
		return err == nil && len(v.Waiters) == 1
	})

	start := time.Now()
	if err := revoker.RevokeKey(ctx, tn, keyID); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-watchEnd:
		t.Logf("the watch ended %v after the revocation", time.Since(start))
		if !errors.Is(err, engine.ErrKeyRevoked) {
			t.Errorf("the watch ended with %v, want ErrKeyRevoked", err)
		}
	case <-time.After(revocationLimit):
		t.Fatalf("the key's watch still runs %v after its revocation", revocationLimit)
	}
	select {
	case r := <-queued:
		t.Logf("the queued acquire was answered %v after the revocation", time.Since(start))
		if !errors.Is(r.err, engine.ErrKeyRevoked) {
			t.Errorf("the queued acquire = %+v, %v; want ErrKeyRevoked", r.lease, r.err)
		}
	case <-time.After(revocationLimit):
		t.Fatalf("the key's queued acquire still waits %v after its revocation", revocationLimit)
	}
	// It left the queue: the lock, once free, stays free.
	if _, err := holder.Release(ctx, tn, first.ID); err != nil {
		t.Fatal(err)
	}
	if v, err := holder.Inspect(ctx, lk); err != nil || len(v.Holders) != 0 || len(v.Waiters) != 0 {
		t.Errorf("lock after the release = %+v, %v; want nobody holding or waiting", v, err)
	}

	// Whatever the key opens afterwards ends as well, and it is refused.
	late, ldone := holder.KeyContext(ctx, p.KeyID)
	defer ldone()
	select {
	case <-late.Done():
	case <-time.After(revocationLimit):
		t.Fatalf("a KeyContext of the revoked key still runs %v after its revocation", revocationLimit)
	}
	dlmtest.Eventually(t, "the revoked key is refused", func() bool {
		_, err := holder.Authenticate(ctx, key)
		var de *dlm.Error
		return errors.As(err, &de) && de.Code == dlm.CodeUnauthenticated
	})
}
