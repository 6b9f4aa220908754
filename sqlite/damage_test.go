package sqlite_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/sqlite"
)

// crashImage returns the files a crash would leave with acknowledged
// batches in the journal only: leases taken, and the first one released,
// while SQLite's write lock was held elsewhere so the applier wrote none of
// them into the database.
func crashImage(t *testing.T) (path string, leases []dlm.Lease, released dlm.Lease) {
	t.Helper()
	live := filepath.Join(t.TempDir(), "dlm.db")
	s, err := sqlite.Open(live)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := t.Context()
	unlock := holdWriteLock(t, live)
	defer unlock()
	for i := range 8 {
		l, err := acquire(ctx, s, fmt.Sprint("damage/", i), "h")
		if err != nil {
			t.Fatal(err)
		}
		leases = append(leases, l)
	}
	if err := release(ctx, s, leases[0]); err != nil {
		t.Fatal(err)
	}
	path = filepath.Join(t.TempDir(), "dlm.db")
	for _, suffix := range []string{"", "-wal", ".commitlog", ".commitlog2"} {
		copyFile(t, live+suffix, path+suffix)
	}
	return path, leases[1:], leases[0]
}

// TestDamageIsRefused damages a crash image the ways a disk or an operator
// can, and checks that the store refuses to open, naming the file, rather
// than starting without acknowledged batches (whose fencing tokens a new
// acquire would then repeat).
func TestDamageIsRefused(t *testing.T) {
	const firstRecord = 4096 // the journal's header block
	damages := []struct {
		name, file string // file: the suffix of the file that is damaged
		damage     func(t *testing.T, path string)
	}{
		{"garbage in a record", ".commitlog", func(t *testing.T, path string) {
			writeAt(t, path, firstRecord+40, []byte{0xde, 0xad, 0xbe, 0xef})
		}},
		{"garbage in a record's length", ".commitlog", func(t *testing.T, path string) {
			writeAt(t, path, firstRecord, []byte{0xff, 0xff, 0x00, 0x00})
		}},
		{"cut to half its records", ".commitlog", func(t *testing.T, path string) {
			truncate(t, path, firstRecord+recordsSize(t, path)/2)
		}},
		{"cut to nothing", ".commitlog", func(t *testing.T, path string) { truncate(t, path, 0) }},
		{"deleted", ".commitlog", func(t *testing.T, path string) { remove(t, path) }},
		{"second journal deleted", ".commitlog2", func(t *testing.T, path string) { remove(t, path) }},
		{"both journals deleted", ".commitlog", func(t *testing.T, path string) {
			remove(t, path)
			remove(t, path[:len(path)-len(".commitlog")]+".commitlog2")
		}},
		{"magic overwritten", ".commitlog", func(t *testing.T, path string) {
			writeAt(t, path, 0, []byte("XXXXXXXX"))
		}},
		{"database cut to nothing", "", func(t *testing.T, path string) {
			truncate(t, path, 0)
			os.Remove(path + "-wal")
		}},
		{"database deleted", "", func(t *testing.T, path string) {
			remove(t, path)
			os.Remove(path + "-wal")
		}},
	}
	for _, d := range damages {
		t.Run(d.name, func(t *testing.T) {
			path, _, _ := crashImage(t)
			d.damage(t, path+d.file)
			s, err := sqlite.Open(path)
			if err == nil {
				s.Close()
				t.Fatal("the damaged store opened")
			}
			var de *sqlite.DamageError
			if !errors.As(err, &de) || de.File != path+d.file {
				t.Fatalf("open: %v; want a DamageError naming %s", err, path+d.file)
			}
		})
	}
}

// TestTornTailIsDropped cuts the last record the way a crash mid-write
// does: that batch was never acknowledged, so the store opens without it
// and keeps everything before it.
func TestTornTailIsDropped(t *testing.T) {
	path, leases, released := crashImage(t)
	journal := path + ".commitlog"
	end := 4096 + recordsSize(t, journal)
	// The release is the last record: zero its last bytes, as a write cut
	// short by a crash leaves them.
	writeAt(t, journal, end-8, make([]byte, 8))
	s, err := sqlite.Open(path)
	if err != nil {
		t.Fatalf("open after a torn tail: %v", err)
	}
	defer s.Close()
	// Without the release, the released lease is held again: its release
	// was never acknowledged.
	ctx := t.Context()
	err = s.View(ctx, func(tx dlm.ReadTx) error {
		for _, l := range append(leases, released) {
			live, _, err := tx.FindLease(ctx, l.ID)
			if err != nil {
				return err
			}
			if live == nil || live.Token != l.Token {
				t.Errorf("lease %s after a torn tail: %+v; want it held with token %d", l.Key.Name, live, l.Token)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestAcceptDataLoss opens a damaged store when the operator says so, with
// what is intact.
func TestAcceptDataLoss(t *testing.T) {
	path, _, _ := crashImage(t)
	writeAt(t, path+".commitlog", 4096+40, []byte{0xde, 0xad, 0xbe, 0xef})
	s, err := sqlite.OpenWith(path, sqlite.Options{AcceptDataLoss: true})
	if err != nil {
		t.Fatalf("open with AcceptDataLoss: %v", err)
	}
	s.Close()
	// It started over: the journals are whole again.
	if s, err = sqlite.Open(path); err != nil {
		t.Fatalf("reopen: %v", err)
	}
	s.Close()
}

// recordsSize returns how many bytes of records the journal at path holds
// after its header: up to the zero length that ends them.
func recordsSize(t *testing.T, path string) int64 {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	off := int64(4096)
	for off+12 <= int64(len(data)) {
		n := int64(data[off]) | int64(data[off+1])<<8 | int64(data[off+2])<<16 | int64(data[off+3])<<24
		if n == 0 {
			break
		}
		off += 12 + n
	}
	if off == 4096 {
		t.Fatal("the journal holds no records")
	}
	return off - 4096
}

func writeAt(t *testing.T, path string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func truncate(t *testing.T, path string, size int64) {
	t.Helper()
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
}

func remove(t *testing.T, path string) {
	t.Helper()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
}
