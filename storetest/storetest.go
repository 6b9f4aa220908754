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
	"github.com/dlmhq/dlm/dlmtest"
	"github.com/dlmhq/dlm/engine"
)

// Opener returns a function that opens a store on one fresh, empty database.
// Every call of the returned function opens another store on that same
// database (as a restarted process would); the suite closes what it opens.
// The store reads the time from clock if it can (the embedded store does;
// PostgreSQL uses the database's clock and ignores it); clock is nil for
// the real one.
type Opener func(t *testing.T) func(clock dlm.Clock) dlm.Store

// Run runs the whole suite. manualClock says that the store reads the time
// from the clock it is opened with: the tests of expiry then drive it with a
// dlmtest.ManualClock instead of waiting for real TTLs.
func Run(t *testing.T, open Opener, manualClock bool) {
	run(t, suite{open: open, manual: manualClock})
}

// suite is what every test is given.
type suite struct {
	open   Opener
	manual bool
}

func run(t *testing.T, open suite) {
	tests := []struct {
		name string
		fn   func(t *testing.T, open suite)
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
		{"TermsSurviveReopen", testTermsSurviveReopen},
		{"LockDelayIsDue", testDelayIsDue},
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
	reopen func(dlm.Clock) dlm.Store
	// clock is the manual clock of store and engine, or nil when they
	// read the real time.
	clock *dlmtest.ManualClock
}

func newEnv(t *testing.T, open suite, opts engine.Options) *env {
	t.Helper()
	e := &env{t: t, ctx: t.Context(), reopen: open.open(t)}
	e.start(opts)
	return e
}

// newClockedEnv is newEnv on a manual clock, if the store can read it.
func newClockedEnv(t *testing.T, open suite, opts engine.Options) *env {
	t.Helper()
	e := &env{t: t, ctx: t.Context(), reopen: open.open(t)}
	if open.manual {
		e.clock = dlmtest.NewManualClock(time.Now())
	}
	e.start(opts)
	return e
}

// pass lets d go by, then waits until cond holds. On a manual clock it
// advances the clock by d, and then a millisecond at a time, so that the
// sweeper, asleep on the clock, wakes; on the real clock it polls.
func (e *env) pass(d time.Duration, what string, cond func() bool) {
	e.t.Helper()
	if e.clock == nil {
		dlmtest.Eventually(e.t, what, cond)
		return
	}
	e.clock.Advance(d)
	dlmtest.Eventually(e.t, what, func() bool {
		if cond() {
			return true
		}
		e.clock.Advance(time.Millisecond)
		return false
	})
}

// start opens a store and an engine on it, to be closed at the end of the test.
func (e *env) start(opts engine.Options) {
	var clock dlm.Clock
	if e.clock != nil {
		clock, opts.Clock = e.clock, e.clock
	}
	e.store = e.reopen(clock)
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
