// Package storetest is the conformance suite every dlm.Store passes. It drives
// the store through the engine, so it checks the guarantees of the guarantees (RELIABILITY.md) as a
// client sees them: the same tests run on SQLite and on PostgreSQL, and the two
// cannot drift apart.
package storetest

import (
	"context"
	"testing"
	"time"

	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/engine"
)

// Opener returns a function that opens a store on one fresh, empty database.
// Every call of the returned function opens another store on that same
// database (as a restarted process would); the suite closes what it opens.
type Opener func(t *testing.T) func() dlm.Store

// Run runs the whole suite.
func Run(t *testing.T, open Opener) {
	tests := []struct {
		name string
		fn   func(t *testing.T, open Opener)
	}{
		{"AcquireRelease", testAcquireRelease},
		{"ConflictReportsHolders", testConflictReportsHolders},
		{"SharedHoldersGetDistinctTokens", testSharedTokens},
		{"LeaseEndedReasons", testLeaseEndedReasons},
		{"Renew", testRenew},
		{"ExpiredLeaseIsNotHeld", testExpiredLeaseIsNotHeld},
		{"SweeperGrantsWaiterAfterExpiry", testSweeperGrantsWaiter},
		{"LateGrantStartsNow", testLateGrantStartsNow},
		{"RevokedKeyEndsWhatItHolds", testRevokedKeyEndsWhatItHolds},
		{"FIFOOrder", testFIFOOrder},
		{"MixedModesFIFO", testMixedModesFIFO},
		{"WaitTimeout", testWaitTimeout},
		{"CancelledWaiterLeavesQueue", testCancelledWaiterLeavesQueue},
		{"CloseAnswersWaitersAndKeepsLeases", testCloseAnswersWaiters},
		{"Idempotency", testIdempotency},
		{"IdempotentRetryWhileQueued", testIdempotentRetryWhileQueued},
		{"IdempotencyComparesRequestedTTL", testIdempotencyComparesRequestedTTL},
		{"TenantIsolation", testTenantIsolation},
		{"TenantLimits", testTenantLimits},
		{"List", testList},
		{"ForceRelease", testForceRelease},
		{"TenantsAndKeys", testTenantsAndKeys},
		{"FencingSurvivesReopen", testFencingSurvivesReopen},
		{"ConcurrentClientsNeverOverlap", testConcurrentSafety},
		{"EventLog", testEventLog},
		{"CountRetentionWithinSeconds", testCountRetentionWithinSeconds},
		{"EventIsolationAndFilters", testEventIsolationAndFilters},
		{"WatchBacklogThenLiveWithoutGaps", testWatchBacklogThenLiveWithoutGaps},
		{"WatchLiveOnlyAndFilter", testWatchLiveOnlyAndFilter},
		{"WatchResume", testWatchResume},
		{"SlowWatcherIsDropped", testSlowWatcherIsDropped},
		{"WatcherCatchesUpAfterBurst", testWatcherCatchesUpAfterBurst},
		{"Stats", testStats},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.fn(t, open)
		})
	}
}

// env is one test's engine on a fresh store.
type env struct {
	t      *testing.T
	ctx    context.Context
	store  dlm.Store
	engine *engine.Engine
	reopen func() dlm.Store
}

func newEnv(t *testing.T, open Opener, opts engine.Options) *env {
	t.Helper()
	reopen := open(t)
	e := &env{t: t, ctx: t.Context(), reopen: reopen}
	e.start(opts)
	return e
}

// start opens a store and an engine on it, to be closed at the end of the test.
func (e *env) start(opts engine.Options) {
	e.store = e.reopen()
	e.engine = engine.New(e.store, opts)
	eng, st := e.engine, e.store
	e.t.Cleanup(func() {
		eng.Close()
		st.Close()
	})
}

// restart closes the engine and store and opens new ones on the same data,
// as a restarted process would.
func (e *env) restart(opts engine.Options) {
	e.engine.Close()
	if err := e.store.Close(); err != nil {
		e.t.Fatalf("closing store: %v", err)
	}
	e.start(opts)
}

const tenant = "acme"

func k(name string) dlm.Key { return dlm.Key{Namespace: tenant, Name: name} }

func areq(name, holder string, m dlm.Mode) engine.AcquireRequest {
	return engine.AcquireRequest{Tenant: tenant, Key: k(name), Mode: m, HolderID: holder, TTL: time.Minute}
}

func (e *env) acquire(r engine.AcquireRequest) dlm.Lease {
	e.t.Helper()
	l, _, err := e.engine.Acquire(e.ctx, r)
	if err != nil {
		e.t.Fatalf("acquire %s by %s: %v", r.Key.Name, r.HolderID, err)
	}
	return l
}

func (e *env) release(l dlm.Lease) {
	e.t.Helper()
	if _, err := e.engine.Release(e.ctx, l.Tenant, l.ID); err != nil {
		e.t.Fatalf("release %s: %v", l.ID, err)
	}
}

func (e *env) inspect(name string) dlm.LockState {
	e.t.Helper()
	v, err := e.engine.Inspect(e.ctx, k(name))
	if err != nil {
		e.t.Fatalf("inspect %s: %v", name, err)
	}
	return v
}

// wantCode fails t unless err is a *dlm.Error with code.
func wantCode(t *testing.T, err error, code string) *dlm.Error {
	t.Helper()
	de, ok := err.(*dlm.Error)
	if !ok || de.Code != code {
		t.Fatalf("err = %v, want code %s", err, code)
	}
	return de
}
