package sqlite_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/engine"
	"github.com/dlmhq/dlm/sqlite"
)

// TestJournalRecoversTerms is TestJournalRecoversLostCommits for what the
// lock features add: the terms of a live and an ended lease and a lock's
// lock-delay come back from the journal alone.
func TestJournalRecoversTerms(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dlm.db")
	ctx := t.Context()
	open := func() (*sqlite.Store, *engine.Engine) {
		s, err := sqlite.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		return s, engine.New(s, engine.Options{})
	}
	req := func(name string) engine.AcquireRequest {
		return engine.AcquireRequest{Tenant: "t", Key: dlm.Key{Namespace: "t", Name: name}, Mode: dlm.Shared, HolderID: "h",
			TTL: time.Hour, Limit: 2, LockDelay: time.Minute, MaxHold: 2 * time.Hour}
	}

	s, e := open()
	e.Close()
	s.Close()
	old := filepath.Join(t.TempDir(), "old.db")
	copyFile(t, path, old) // the database before any lease

	s, e = open()
	held, _, err := e.Acquire(ctx, req("a"))
	if err != nil {
		t.Fatal(err)
	}
	forced, _, err := e.Acquire(ctx, req("b"))
	if err != nil {
		t.Fatal(err)
	}
	ended, err := e.ForceRelease(ctx, forced.Key)
	if err != nil || len(ended) != 1 {
		t.Fatal(ended, err)
	}
	e.Close()
	s.Close()
	copyFile(t, old, path)
	os.Remove(path + "-wal")

	s, e = open()
	defer s.Close()
	defer e.Close()
	want := dlm.Terms{Limit: 2, LockDelay: time.Minute, MaxHold: 2 * time.Hour}
	err = s.View(ctx, func(tx dlm.ReadTx) error {
		live, _, err := tx.FindLease(ctx, held.ID)
		if err != nil {
			return err
		}
		_, gone, err := tx.FindLease(ctx, forced.ID)
		if err != nil {
			return err
		}
		if live == nil || live.Terms != want || gone == nil || gone.Terms != want {
			t.Errorf("after recovery: lease %+v, ended lease %+v; want both with terms %+v", live, gone, want)
		}
		st, err := tx.LoadLock(ctx, forced.Key)
		if err != nil {
			return err
		}
		if until := ended[0].EndedAt.Add(time.Minute); !st.DelayUntil.Equal(until) {
			t.Errorf("after recovery: lock-delay until %v, want %v", st.DelayUntil, until)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.Acquire(ctx, req("b")); dlm.ErrorCode(err) != dlm.CodeLockConflict {
		t.Errorf("acquire during the recovered lock-delay: %v, want lock_conflict", err)
	}
}
