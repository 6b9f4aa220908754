package sqlite_test

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/sqlite"
)

// TestIdleTokensSurvive takes and releases more locks than the idle cache
// keeps, with journals small enough to rotate many times, and the applier
// held back for the last batches: every lock's fencing token must still be
// known, from memory, the batches not yet in the file, or the file, to
// batches, to reads and after a reopen.
func TestIdleTokensSurvive(t *testing.T) {
	defer sqlite.SetMaxIdle(1000)()
	path := filepath.Join(t.TempDir(), "dlm.db")
	opts := sqlite.Options{JournalSize: 256 << 10} // two batches' records
	s, err := sqlite.OpenWith(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	const batches, perBatch = 20, 500
	key := func(i int) dlm.Key { return dlm.Key{Namespace: "t", Name: fmt.Sprint("k", i)} }
	var unlock func()
	for n := range batches {
		if n == batches-3 {
			// The last batches wait for SQLite: memory and their
			// overlays must answer for the locks they emptied.
			unlock = holdWriteLock(t, path)
		}
		need := &dlm.Need{}
		for i := range perBatch {
			need.Keys = append(need.Keys, key(n*perBatch+i))
		}
		b, err := s.Load(ctx, need)
		if err != nil {
			t.Fatal(err)
		}
		var saves []dlm.Save
		for i, k := range need.Keys {
			st := b.Lock(k)
			id := fmt.Sprint("l", n*perBatch+i)
			acq, rel := new(dlm.Change), new(dlm.Change)
			if _, _, _, err := st.Acquire(b.Now(), dlm.Request{ID: id, Tenant: "t", Key: k, Mode: dlm.Exclusive, HolderID: "h", TTL: time.Hour}, acq); err != nil {
				t.Fatal(err)
			}
			st.Release(b.Now(), id, rel)
			saves = append(saves, dlm.Save{State: st, Change: acq}, dlm.Save{State: st, Change: rel})
		}
		if err := b.Commit(ctx, saves); err != nil {
			t.Fatal(err)
		}
	}
	if n := s.IdleLocks(); n >= batches*perBatch {
		t.Fatalf("the idle cache kept all %d locks: the test evicts none", n)
	}
	check := func(s *sqlite.Store, when string, unlock func()) {
		t.Helper()
		need := &dlm.Need{}
		for i := range batches * perBatch {
			need.Keys = append(need.Keys, key(i))
		}
		b, err := s.Load(ctx, need)
		if err != nil {
			t.Fatal(err)
		}
		lost := 0
		for _, k := range need.Keys {
			if b.Lock(k).Token != 1 {
				lost++
			}
		}
		b.Abort()
		if lost > 0 {
			t.Errorf("%s: batches lost %d tokens", when, lost)
		}
		lost = 0
		unlock()
		err = s.View(ctx, func(tx dlm.ReadTx) error {
			for _, k := range need.Keys {
				st, err := tx.LoadLock(ctx, k)
				if err != nil {
					return err
				}
				if st.Token != 1 {
					lost++
				}
			}
			return nil
		})
		if err != nil || lost > 0 {
			t.Errorf("%s: reads lost %d tokens (%v)", when, lost, err)
		}
	}
	check(s, "live", unlock)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = sqlite.OpenWith(path, opts); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	check(s, "reopened", func() {})
}
