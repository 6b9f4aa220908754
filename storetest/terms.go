package storetest

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/dlmtest"
	"github.com/dlmhq/dlm/engine"
)

// testTermsSurviveReopen checks that the store keeps what the lock features
// add: a lease's terms, live and ended, a lock's lock-delay, and a
// multi-lock waiter's terms and group, as committed and, but for the
// waiter (whose request dies with the process), after a reopen.
func testTermsSurviveReopen(t *testing.T, open suite) {
	e := newEnv(t, open, engine.Options{})
	sem := areq("sem", "a", dlm.Shared)
	sem.Limit, sem.LockDelay, sem.MaxHold = 3, 2*time.Second, 10*time.Minute
	held := e.acquire(sem)
	wantTerms := dlm.Terms{Limit: 3, LockDelay: 2 * time.Second, MaxHold: 10 * time.Minute}

	// Force-released, the lease ends with its terms and starts the
	// lock-delay: long enough to be in force still after the reopen.
	fr := areq("delayed", "b", dlm.Exclusive)
	fr.LockDelay, fr.MaxHold = time.Minute, 5*time.Minute
	forced := e.acquire(fr)
	ended, err := e.engine.ForceRelease(e.ctx, k("delayed"))
	if err != nil || len(ended) != 1 {
		t.Fatalf("force release = %+v, %v", ended, err)
	}
	wantUntil := ended[0].EndedAt.Add(time.Minute)

	// A multi-lock acquire queues behind m1's holder, on m1 and m2.
	blocker := e.acquire(areq("m1", "c", dlm.Exclusive))
	wctx, cancel := context.WithCancel(e.ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, _, err := e.engine.AcquireMany(wctx, engine.AcquireManyRequest{
			Tenant: tenant, HolderID: "d", TTL: time.Minute, Wait: time.Minute,
			Locks:     []engine.LockSpec{{Key: k("m1")}, {Key: k("m2"), Mode: dlm.Shared, Limit: 2}},
			LockDelay: 3 * time.Second, MaxHold: 4 * time.Minute,
		})
		done <- err
	}()
	e.waitQueued("m1", 1)

	check := func(when string, withWaiters bool) {
		t.Helper()
		err := e.store.View(e.ctx, func(tx dlm.ReadTx) error {
			live, _, err := tx.FindLease(e.ctx, held.ID)
			if err != nil {
				return err
			}
			if live == nil || live.Terms != wantTerms {
				t.Errorf("%s: lease = %+v, want terms %+v", when, live, wantTerms)
			}
			_, gone, err := tx.FindLease(e.ctx, forced.ID)
			if err != nil {
				return err
			}
			if want := (dlm.Terms{LockDelay: time.Minute, MaxHold: 5 * time.Minute}); gone == nil || gone.Terms != want || gone.Reason != dlm.ForceReleased {
				t.Errorf("%s: ended lease = %+v, want terms %+v", when, gone, want)
			}
			s, err := tx.LoadLock(e.ctx, k("delayed"))
			if err != nil {
				return err
			}
			if !s.DelayUntil.Equal(wantUntil) {
				t.Errorf("%s: lock-delay until %v, want %v", when, s.DelayUntil, wantUntil)
			}
			ls, err := tx.ListLocks(e.ctx, tenant, "sem", "", 10)
			if err != nil {
				return err
			}
			if len(ls) != 1 || len(ls[0].Holders) != 1 || ls[0].Holders[0].Terms != wantTerms {
				t.Errorf("%s: listed = %+v, want sem held with terms %+v", when, ls, wantTerms)
			}
			if !withWaiters {
				return nil
			}
			keys := []dlm.Key{k("m1"), k("m2")}
			var group string
			for i, key := range keys {
				s, err := tx.LoadLock(e.ctx, key)
				if err != nil {
					return err
				}
				if len(s.Waiters) != 1 {
					t.Errorf("%s: waiters of %s = %+v, want one", when, key.Name, s.Waiters)
					continue
				}
				w := s.Waiters[0]
				want := dlm.Terms{LockDelay: 3 * time.Second, MaxHold: 4 * time.Minute}
				if i == 1 {
					want.Limit = 2
				}
				if i == 0 {
					group = w.Group
				}
				if w.Terms != want || w.Group == "" || w.Group != group || !slices.Equal(w.GroupKeys, keys) {
					t.Errorf("%s: waiter on %s = %+v, want terms %+v, group %q of %v", when, key.Name, w, want, group, keys)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatalf("%s: %v", when, err)
		}
		// What the engine decides on, loaded for a write, has them too:
		// the lock-delay keeps the lock from a try-once acquire, the
		// semaphore takes another holder of its limit (a lock held
		// without one would refuse it), max hold caps a renewal.
		if _, _, err := e.engine.Acquire(e.ctx, areq("delayed", "e", dlm.Exclusive)); dlm.ErrorCode(err) != dlm.CodeLockConflict {
			t.Errorf("%s: acquire during the lock-delay: %v, want lock_conflict", when, err)
		}
		other := sem
		other.HolderID = "f"
		if l, _, err := e.engine.Acquire(e.ctx, other); err != nil {
			t.Errorf("%s: acquire of the semaphore with its limit: %v", when, err)
		} else {
			e.release(l)
		}
		renewed, err := e.engine.Renew(e.ctx, tenant, held.ID, 20*time.Minute)
		if want := held.AcquiredAt.Add(10 * time.Minute); err != nil || !renewed.ExpiresAt.Equal(want) {
			t.Errorf("%s: renewal past max hold = %v, %v; want expiry %v", when, renewed.ExpiresAt, err, want)
		}
	}
	check("committed", true)
	cancel()
	if err := <-done; err == nil {
		t.Error("the cancelled multi-lock acquire succeeded")
	}
	e.release(blocker)
	e.restart(engine.Options{})
	check("reopened", false)
}

// testDelayIsDue checks that a lock with nothing but a lock-delay is due
// once the delay has run out, so that the sweeper ends it (and grants the
// waiters behind it), and is no longer once a sweep has cleared it.
func testDelayIsDue(t *testing.T, open suite) {
	e := newClockedEnv(t, open, engine.Options{})
	r := areq("d", "a", dlm.Exclusive)
	r.LockDelay = 200 * time.Millisecond
	e.acquire(r)
	ended, err := e.engine.ForceRelease(e.ctx, k("d"))
	if err != nil || len(ended) != 1 {
		t.Fatalf("force release = %+v, %v", ended, err)
	}
	until := ended[0].EndedAt.Add(r.LockDelay)
	// Without a sweeper, the delay stays stored past its end.
	e.engine.Close()

	due := func() (keys []dlm.Key, next time.Time) {
		t.Helper()
		err := e.store.View(e.ctx, func(tx dlm.ReadTx) error {
			var err error
			if keys, err = tx.DueLocks(e.ctx, 10); err != nil {
				return err
			}
			next, err = tx.NextDue(e.ctx)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return keys, next
	}
	if keys, next := due(); len(keys) != 0 || !next.Equal(until) {
		t.Errorf("during the delay: due %v, next %v; want none, next %v", keys, next, until)
	}
	e.pass(r.LockDelay, "the lock-delay is due", func() bool {
		keys, _ := due()
		return slices.Equal(keys, []dlm.Key{k("d")})
	})
	if _, next := due(); !next.Equal(until) {
		t.Errorf("once due: next %v, want %v", next, until)
	}

	opts := engine.Options{}
	if e.clock != nil {
		opts.Clock = e.clock
	}
	e.engine = engine.New(e.store, opts)
	t.Cleanup(e.engine.Close)
	dlmtest.Eventually(t, "a sweep clears the lock-delay", func() bool {
		keys, next := due()
		return len(keys) == 0 && next.IsZero()
	})
	if s := e.inspect("d"); !s.DelayUntil.IsZero() {
		t.Errorf("after the sweep, lock-delay until %v", s.DelayUntil)
	}
}
