package sqlite_test

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/sqlite"
)

// TestJournalRotation fills journals many times over: the full one is
// retired by the applier while the other takes records. A crash image taken
// while one journal waits to be retired (the applier held back) holds
// acknowledged batches in both, and recovery must replay both; the live
// store must keep every lease across rotations and a restart.
func TestJournalRotation(t *testing.T) {
	holder := strings.Repeat("h", 2000) // about 4 KiB per record, with its event: a journal takes 15
	dir := t.TempDir()
	path := filepath.Join(dir, "dlm.db")
	small := sqlite.Options{JournalSize: 64 << 10}
	s, err := sqlite.OpenWith(path, small)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	var leases []dlm.Lease
	names := 0
	take := func(s *sqlite.Store, n int) {
		t.Helper()
		for range n {
			l, err := acquire(ctx, s, fmt.Sprint("rot/", names), holder)
			if err != nil {
				t.Fatal(err)
			}
			names++
			leases = append(leases, l)
		}
	}

	// Hold the applier back: the first journal fills and waits to be
	// retired while the second takes records.
	unlock := holdWriteLock(t, path)
	take(s, 22)
	if n, err := sqlite.JournalRecords(path + ".commitlog2"); err != nil || n == 0 {
		t.Fatalf("the second journal holds %d records (%v); want the first to have filled", n, err)
	}
	// Granted in the first journal, released in the second.
	if err := release(ctx, s, leases[0]); err != nil {
		t.Fatal(err)
	}
	released := leases[0]
	leases = leases[1:]
	crashed := filepath.Join(t.TempDir(), "dlm.db")
	for _, suffix := range []string{"", "-wal", ".commitlog", ".commitlog2"} {
		copyFile(t, path+suffix, crashed+suffix)
	}
	unlock()

	// Many rotations, each waiting for the last retirement at most.
	take(s, 200)
	checkHeld(t, s, leases, released)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = sqlite.OpenWith(path, small)
	if err != nil {
		t.Fatal(err)
	}
	checkHeld(t, s, leases, released)
	s.Close()

	r, err := sqlite.OpenWith(crashed, small)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	checkHeld(t, r, leases[:21], released)
}
