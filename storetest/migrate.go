package storetest

import (
	"testing"
	"time"

	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/engine"
)

// RequestedTTLMigration checks that a database whose leases were written
// before stores kept the TTL an acquire asked for is migrated in place, and
// that those leases keep answering idempotent retries, compared with their
// TTL. open opens a store on the one database; downgrade, called with no
// store open, takes the database back to the schema of before.
func RequestedTTLMigration(t *testing.T, open func() dlm.Store, downgrade func()) {
	ctx := t.Context()
	r := areq("old", "h", dlm.Exclusive)
	r.IdempotencyKey = "k"
	s := open()
	e := engine.New(s, engine.Options{})
	first, _, err := e.Acquire(ctx, r)
	e.Close()
	if cerr := s.Close(); err != nil || cerr != nil {
		t.Fatal(err, cerr)
	}
	downgrade()

	s = open()
	defer s.Close()
	e = engine.New(s, engine.Options{})
	defer e.Close()
	again, replayed, err := e.Acquire(ctx, r)
	if err != nil || !replayed || again.ID != first.ID {
		t.Errorf("retry after the migration = %v (replayed %v), %v; want %v replayed", again.ID, replayed, err, first.ID)
	}
	other := r
	other.TTL = 2 * time.Minute
	if _, _, err := e.Acquire(ctx, other); dlm.ErrorCode(err) != dlm.CodeIdempotencyKeyReused {
		t.Errorf("retry with another ttl after the migration: %v, want idempotency_key_reused", err)
	}
}

// TermsMigration checks that a database written before stores kept lock
// terms, groups and lock-delays is migrated in place: its leases, live and
// ended, read back with no terms, and the new columns keep what is written
// after. open opens a store on the one database; downgrade, called with no
// store open, takes the database back to the schema of before.
func TermsMigration(t *testing.T, open func() dlm.Store, downgrade func()) {
	ctx := t.Context()
	s := open()
	e := engine.New(s, engine.Options{})
	held, _, err := e.Acquire(ctx, areq("old", "h", dlm.Exclusive))
	if err != nil {
		t.Fatal(err)
	}
	gone, _, err := e.Acquire(ctx, areq("gone", "h", dlm.Exclusive))
	if err == nil {
		_, err = e.Release(ctx, tenant, gone.ID)
	}
	e.Close()
	if cerr := s.Close(); err != nil || cerr != nil {
		t.Fatal(err, cerr)
	}
	downgrade()

	s = open()
	e = engine.New(s, engine.Options{})
	err = s.View(ctx, func(tx dlm.ReadTx) error {
		live, _, err := tx.FindLease(ctx, held.ID)
		if err != nil {
			return err
		}
		_, ended, err := tx.FindLease(ctx, gone.ID)
		if err != nil {
			return err
		}
		if live == nil || live.Terms != (dlm.Terms{}) || ended == nil || ended.Terms != (dlm.Terms{}) {
			t.Errorf("after the migration: lease %+v, ended lease %+v; want both, without terms", live, ended)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	r := areq("new", "h", dlm.Shared)
	r.Limit, r.LockDelay, r.MaxHold = 2, time.Minute, time.Hour
	l, _, err := e.Acquire(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	ended, err := e.ForceRelease(ctx, k("new"))
	e.Close()
	if cerr := s.Close(); err != nil || cerr != nil || len(ended) != 1 {
		t.Fatal(ended, err, cerr)
	}

	s = open()
	defer s.Close()
	err = s.View(ctx, func(tx dlm.ReadTx) error {
		_, e, err := tx.FindLease(ctx, l.ID)
		if err != nil {
			return err
		}
		if e == nil || e.Terms != l.Terms {
			t.Errorf("ended lease written after the migration = %+v, want terms %+v", e, l.Terms)
		}
		st, err := tx.LoadLock(ctx, k("new"))
		if err != nil {
			return err
		}
		if want := ended[0].EndedAt.Add(time.Minute); !st.DelayUntil.Equal(want) {
			t.Errorf("lock-delay written after the migration until %v, want %v", st.DelayUntil, want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
