package linearize_test

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/engine"
	"github.com/dlmhq/dlm/sqlite"
)

// gateStore holds the first transaction that renews a lease open after its
// decision, as a slow fsync would, until the test lets it commit.
type gateStore struct {
	dlm.Store
	mu      sync.Mutex
	armed   bool
	decided chan time.Time // the renewing transaction's now
	proceed chan struct{}
}

func (g *gateStore) Update(ctx context.Context, fn func(dlm.Tx) error) error {
	return g.Store.Update(ctx, func(tx dlm.Tx) error {
		rt := &renewSpy{Tx: tx}
		err := fn(rt)
		g.mu.Lock()
		hold := g.armed && rt.renewed
		if hold {
			g.armed = false
		}
		g.mu.Unlock()
		if hold {
			g.decided <- tx.Now()
			<-g.proceed
		}
		return err
	})
}

type renewSpy struct {
	dlm.Tx
	renewed bool
}

func (r *renewSpy) Save(ctx context.Context, s *dlm.LockState, c *dlm.Change) error {
	if len(c.Renewed) > 0 {
		r.renewed = true
	}
	return r.Tx.Save(ctx, s, c)
}

// TestBUGReadSeesExpiredLeaseRevived: a renew decided just before the
// lease's expiry but committed just after it (a group commit's fsync takes
// that long) lets readers see the lease expired and then live again. Reads
// evaluate committed state at their own, later, now; the batch in flight
// decided at an earlier now. Between the two, GET /v1/leases/{id} answers
// 410 lease_ended (expired) and inspect shows the lock free, then the renew
// answers 200 and the lease is held again: "an expired lease is never
// revived" (SPEC §3) fails for every reader in that window, and the history
// is not linearizable (the renew must take effect before the read that
// missed it or fail). A fix: reads evaluate expiry at no later than the now
// of the oldest write batch still in flight.
func TestBUGReadSeesExpiredLeaseRevived(t *testing.T) {
	t.Skip("BUG: a read between a renew's decision (before expiry) and its commit (after) sees the lease expired, then live again")
	st, err := sqlite.Open(filepath.Join(t.TempDir(), "dlm.db"))
	if err != nil {
		t.Fatal(err)
	}
	g := &gateStore{Store: st, decided: make(chan time.Time, 1), proceed: make(chan struct{})}
	e := engine.New(g, engine.Options{})
	t.Cleanup(func() {
		e.Close()
		st.Close()
	})
	ctx := t.Context()
	k := dlm.Key{Namespace: tenant, Name: "revive"}
	l, _, err := e.Acquire(ctx, engine.AcquireRequest{Tenant: tenant, Key: k, HolderID: "a", TTL: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	// Renew 20ms before the expiry; hold its commit until after it.
	time.Sleep(time.Until(l.ExpiresAt.Add(-20 * time.Millisecond)))
	g.mu.Lock()
	g.armed = true
	g.mu.Unlock()
	renewed := make(chan error, 1)
	go func() {
		_, err := e.Renew(ctx, tenant, l.ID, 0)
		renewed <- err
	}()
	decidedAt := <-g.decided
	if !decidedAt.Before(l.ExpiresAt) {
		close(g.proceed)
		t.Skipf("the renew was decided %v after the expiry; the machine was too slow to set the scene", decidedAt.Sub(l.ExpiresAt))
	}
	time.Sleep(time.Until(l.ExpiresAt.Add(5 * time.Millisecond)))
	_, errBefore := e.Lease(ctx, tenant, l.ID)
	v, err := e.Inspect(ctx, k)
	if err != nil {
		t.Fatal(err)
	}
	heldBefore := len(v.Holders) > 0
	close(g.proceed)
	if err := <-renewed; err != nil {
		t.Fatalf("renew decided before the expiry failed: %v", err)
	}
	_, errAfter := e.Lease(ctx, tenant, l.ID)
	if (errBefore != nil || !heldBefore) && errAfter == nil {
		t.Errorf("a reader saw the lease ended (GET: %v, inspect holders: %d) and then live again (GET: ok): an expired lease was revived", errBefore, len(v.Holders))
	}
}

// TestBUGIdempotentRetryAfterRenewWithTTL: SPEC 2.6 says an acquire retried
// with the same idempotency key returns the same lease while it is live. The
// core compares the retry with the lease's current TTL, which a renew with
// ttl_ms changes, so the very same request retried after such a renew is
// refused as idempotency_key_reused (422, "same key, different request").
// The comparison should be with the TTL the lease was acquired with.
func TestBUGIdempotentRetryAfterRenewWithTTL(t *testing.T) {
	t.Skip("BUG: an idempotent retry after a renew with a new ttl_ms answers idempotency_key_reused instead of the lease")
	e := openEngine(t)
	ctx := t.Context()
	r := engine.AcquireRequest{Tenant: tenant, Key: key("idem-ttl"), HolderID: "a", TTL: 10 * time.Second, IdempotencyKey: "job-1"}
	l, _, err := e.Acquire(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Renew(ctx, tenant, l.ID, time.Minute); err != nil {
		t.Fatal(err)
	}
	got, replayed, err := e.Acquire(ctx, r)
	if err != nil || !replayed || got.ID != l.ID || got.Token != l.Token {
		t.Errorf("retry of the same request = %s t%d replayed=%v, %v; want lease %s t%d replayed", got.ID, got.Token, replayed, err, l.ID, l.Token)
	}
}
