package sqlite_test

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/sqlite"
)

// TestJournalRotation fills journals many times over: the full one is
// retired by the applier while the other takes records. A crash image taken
// while one journal waits to be retired (the applier held back) holds
// acknowledged batches in both, and recovery must replay both; the live
// store must keep every lease across rotations and a restart.
func TestJournalRotation(t *testing.T) {
	defer sqlite.SetJournalSize(64 << 10)()
	holder := strings.Repeat("h", 2000) // about 4 KiB per record, with its event: a journal takes 15
	dir := t.TempDir()
	path := filepath.Join(dir, "dlm.db")
	s, err := sqlite.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	var leases []dlm.Lease
	names := 0
	acquire := func(s *sqlite.Store, n int) {
		t.Helper()
		for range n {
			name := fmt.Sprint("rot/", names)
			names++
			var l dlm.Lease
			err := s.Update(ctx, func(tx dlm.Tx) error {
				k := dlm.Key{Namespace: "t", Name: name}
				st, err := tx.LoadLock(ctx, k)
				if err != nil {
					return err
				}
				var c dlm.Change
				r := dlm.Request{ID: name, Tenant: "t", Key: k, Mode: dlm.Exclusive, HolderID: holder, TTL: time.Hour}
				out, lease, _, err := st.Acquire(tx.Now(), r, &c)
				if err == nil && out != dlm.Granted {
					err = fmt.Errorf("outcome %v", out)
				}
				if err != nil {
					return err
				}
				l = lease
				return tx.Save(ctx, st, &c)
			})
			if err != nil {
				t.Fatalf("acquire %s: %v", name, err)
			}
			leases = append(leases, l)
		}
	}
	var released dlm.Lease
	check := func(s *sqlite.Store, want []dlm.Lease) {
		t.Helper()
		err := s.View(ctx, func(tx dlm.ReadTx) error {
			if live, ended, err := tx.FindLease(ctx, released.ID); err != nil || live != nil || ended == nil {
				t.Errorf("released lease %s: live %+v, ended %+v, %v; want it ended", released.ID, live, ended, err)
			}
			for _, l := range want {
				got, _, err := tx.FindLease(ctx, l.ID)
				if err != nil {
					return err
				}
				if got == nil || got.Token != l.Token {
					t.Errorf("lease %s: %+v, want it held with token %d", l.ID, got, l.Token)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}

	// Hold the applier back: the first journal fills and waits to be
	// retired while the second takes records.
	unlock := holdWriteLock(t, path)
	acquire(s, 22)
	if n, err := sqlite.JournalRecords(path + ".commitlog2"); err != nil || n == 0 {
		t.Fatalf("the second journal holds %d records (%v); want the first to have filled", n, err)
	}
	// Granted in the first journal, released in the second.
	err = s.Update(ctx, func(tx dlm.Tx) error {
		st, err := tx.LoadLock(ctx, leases[0].Key)
		if err != nil {
			return err
		}
		var c dlm.Change
		if _, ok := st.Release(tx.Now(), leases[0].ID, &c); !ok {
			return fmt.Errorf("%s not held", leases[0].ID)
		}
		return tx.Save(ctx, st, &c)
	})
	if err != nil {
		t.Fatal(err)
	}
	released = leases[0]
	leases = leases[1:]
	crashed := filepath.Join(t.TempDir(), "dlm.db")
	for _, suffix := range []string{"", "-wal", ".commitlog", ".commitlog2"} {
		copyFile(t, path+suffix, crashed+suffix)
	}
	unlock()

	// Many rotations, each waiting for the last retirement at most.
	acquire(s, 200)
	check(s, leases)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = sqlite.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	check(s, leases)
	s.Close()

	r, err := sqlite.Open(crashed)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	check(r, leases[:21])
}
