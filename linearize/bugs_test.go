package linearize_test

import (
	"context"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/dlmtest"
	"github.com/dlmhq/dlm/engine"
	"github.com/dlmhq/dlm/sqlite"
)

// gateStore holds the first transaction that saves a Change matching its
// predicate open after the decision, as a slow fsync would, until the test
// lets it commit.
type gateStore struct {
	dlm.Store
	mu      sync.Mutex
	match   func(*dlm.Change) bool // armed when set
	decided chan time.Time         // the held transaction's now
	proceed chan struct{}
}

func newGateStore(st dlm.Store) *gateStore {
	return &gateStore{Store: st, decided: make(chan time.Time, 1), proceed: make(chan struct{})}
}

// arm makes the next transaction that saves a matching Change wait.
func (g *gateStore) arm(match func(*dlm.Change) bool) {
	g.mu.Lock()
	g.match = match
	g.mu.Unlock()
}

func (g *gateStore) Load(ctx context.Context, need *dlm.Need) (dlm.Batch, error) {
	b, err := g.Store.Load(ctx, need)
	if err != nil {
		return nil, err
	}
	return &gateBatch{Batch: b, g: g}, nil
}

// gateBatch is a batch whose commit waits at the gate if it saves a
// matching Change.
type gateBatch struct {
	dlm.Batch
	g *gateStore
}

func (b *gateBatch) Commit(ctx context.Context, saves []dlm.Save) error {
	g := b.g
	g.mu.Lock()
	match := g.match
	hold := match != nil && slices.ContainsFunc(saves, func(s dlm.Save) bool { return match(s.Change) })
	if hold {
		g.match = nil
	}
	g.mu.Unlock()
	if hold {
		g.decided <- b.Now()
		<-g.proceed
	}
	return b.Batch.Commit(ctx, saves)
}

func renews(c *dlm.Change) bool { return len(c.Renewed) > 0 }

// TestReadNeverSeesExpiredLeaseRevived (was a BUG, fixed in 045ff3d: reads
// now judge expiry no later than the batch in flight): a renew decided just
// before the lease's expiry but committed just after it (a group commit's fsync takes
// that long) lets readers see the lease expired and then live again. Reads
// evaluate committed state at their own, later, now; the batch in flight
// decided at an earlier now. Between the two, GET /v1/leases/{id} answers
// 410 lease_ended (expired) and inspect shows the lock free, then the renew
// answers 200 and the lease is held again: "an expired lease is never
// revived" (guarantee 1) fails for every reader in that window, and the history
// is not linearizable (the renew must take effect before the read that
// missed it or fail). A fix: reads evaluate expiry at no later than the now
// of the oldest write batch still in flight.
//
// Found while writing ExpiryEdges: reading sqlite/commit.go (one now per
// batch, taken before the commit) against readTx (its own later now).
func TestReadNeverSeesExpiredLeaseRevived(t *testing.T) {
	st, err := sqlite.Open(filepath.Join(t.TempDir(), "dlm.db"))
	if err != nil {
		t.Fatal(err)
	}
	g := newGateStore(st)
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
	g.arm(renews)
	renewed := make(chan error, 1)
	go func() {
		_, err := e.Renew(ctx, tenant, l.ID, 0)
		renewed <- err
	}()
	var decidedAt time.Time
	select {
	case decidedAt = <-g.decided:
	case err := <-renewed:
		// Decided after the expiry, the renew renews nothing, so there
		// is no commit to hold.
		t.Skipf("the renew ended (%v) without a commit to hold; the machine was too slow to set the scene", err)
	}
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

// TestIdempotentRetryAfterRenewWithTTLReplays (was a BUG, fixed in 045ff3d):
// guarantee 6 says an acquire retried
// with the same idempotency key returns the same lease while it is live. The
// core compares the retry with the lease's current TTL, which a renew with
// ttl_ms changes, so the very same request retried after such a renew is
// refused as idempotency_key_reused (422, "same key, different request").
// The comparison should be with the TTL the lease was acquired with.
//
// Found while writing the reference model of FuzzLockState (LockState.Acquire
// compares h.TTL, which Renew changes).
func TestIdempotentRetryAfterRenewWithTTLReplays(t *testing.T) {
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

// TestWaiterGrantedThenForceReleasedAnswersTheGrant (was a BUG, fixed in
// 045ff3d): a blocking
// acquire whose grant is made (by a release) and ended (by a force-release)
// before the waiting request collects it answers wait_timeout, "waited
// without a grant", although it was granted: the audit log shows the grant
// and its force-release, the token was spent, and the force-release answered
// it among the leases it ended. The history is not linearizable (found by
// TestEngineLinearizable/wait-force under load). Here the release's commit is
// held until after the waiter's deadline, so that the force-release and the
// waiter's own cleanup (leaveQueue) run after it, in that order; leaveQueue
// finds the lease neither held nor queued and reports no grant. A fix:
// leaveQueue also looks among ended leases for the waiter's ID, and answers
// the grant (whose renewals will then say lease_ended, force_released).
//
// Found by TestEngineLinearizable (porcupine: the force-release ended a
// lease that no acquire in the history was answered).
func TestWaiterGrantedThenForceReleasedAnswersTheGrant(t *testing.T) {
	st, err := sqlite.Open(filepath.Join(t.TempDir(), "dlm.db"))
	if err != nil {
		t.Fatal(err)
	}
	g := newGateStore(st)
	e := engine.New(g, engine.Options{})
	t.Cleanup(func() {
		e.Close()
		st.Close()
	})
	ctx := t.Context()
	k := key("granted-then-forced")
	held, _, err := e.Acquire(ctx, engine.AcquireRequest{Tenant: tenant, Key: k, HolderID: "x", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	const wait = 500 * time.Millisecond
	type result struct {
		l   dlm.Lease
		err error
	}
	waited := make(chan result, 1)
	start := time.Now()
	go func() {
		l, _, err := e.Acquire(ctx, engine.AcquireRequest{Tenant: tenant, Key: k, HolderID: "w", TTL: time.Hour, Wait: wait})
		waited <- result{l, err}
	}()
	dlmtest.Eventually(t, "the waiter is queued", func() bool {
		v, err := e.Inspect(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		return len(v.Waiters) == 1
	})
	// The release grants the waiter; its commit is held.
	g.arm(func(c *dlm.Change) bool { return len(c.Granted) > 0 })
	released := make(chan error, 1)
	go func() {
		_, err := e.Release(ctx, tenant, held.ID)
		released <- err
	}()
	<-g.decided
	// The force-release queues behind it, then the waiter's deadline comes
	// and its cleanup queues behind that.
	forced := make(chan []dlm.EndedLease, 1)
	go func() {
		ended, err := e.ForceRelease(ctx, k)
		if err != nil {
			t.Error(err)
		}
		forced <- ended
	}()
	time.Sleep(time.Until(start.Add(wait + 100*time.Millisecond)))
	close(g.proceed)
	if err := <-released; err != nil {
		t.Fatal(err)
	}
	ended := <-forced
	got := <-waited
	if len(ended) == 1 && ended[0].HolderID == "w" && dlm.ErrorCode(got.err) == dlm.CodeWaitTimeout {
		t.Errorf("the waiter was granted token %d (force-released: %v) but its acquire answered %v", ended[0].Token, ended[0].Reason, got.err)
	}
}
