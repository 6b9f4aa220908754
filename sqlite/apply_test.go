package sqlite_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/sqlite"
)

// holdWriteLock takes SQLite's write lock on the file at path from another
// connection, so that the applier cannot write until release is called.
func holdWriteLock(t *testing.T, path string) (release func()) {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := db.Conn(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(t.Context(), `BEGIN IMMEDIATE`); err != nil {
		t.Fatal(err)
	}
	return func() {
		conn.ExecContext(context.Background(), `ROLLBACK`)
		conn.Close()
		db.Close()
	}
}

// TestAcknowledgedBeforeApplied checks the split between the journal and
// the file: acquires are acknowledged while SQLite's write lock is held
// elsewhere (the file is off their path), reads wait until the file has
// what was acknowledged, and a copy of the files taken before the applier
// wrote anything recovers every acknowledged lease from the journal.
func TestAcknowledgedBeforeApplied(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "dlm.db")
	s, err := sqlite.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := t.Context()

	unlock := holdWriteLock(t, path)
	var leases []dlm.Lease
	for _, name := range []string{"a", "b", "c"} {
		l, err := acquire(ctx, s, name, "h")
		if err != nil {
			t.Fatalf("acquire %s while the file is locked: %v", name, err)
		}
		leases = append(leases, l)
	}
	// Released within the applier's group: it never needs a lease row.
	released, err := acquire(ctx, s, "released", "h")
	if err != nil {
		t.Fatal(err)
	}
	if err := release(ctx, s, released); err != nil {
		t.Fatal(err)
	}
	// A crash now would leave these files: the leases are in the journal only.
	crashed := filepath.Join(t.TempDir(), "dlm.db")
	for _, suffix := range []string{"", "-wal", ".commitlog", ".commitlog2"} {
		copyFile(t, path+suffix, crashed+suffix)
	}

	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if err := s.View(short, func(dlm.ReadTx) error { return nil }); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a read while acknowledged batches are not in the file answered %v, want it to wait", err)
	}
	unlock()
	checkHeld(t, s, leases, released)

	r, err := sqlite.Open(crashed)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	checkHeld(t, r, leases, released)
}

// acquire takes an hour's exclusive lease on name for holder, straight on
// the store.
func acquire(ctx context.Context, s dlm.Store, name, holder string) (l dlm.Lease, err error) {
	k := dlm.Key{Namespace: "t", Name: name}
	err = decide(ctx, s, &dlm.Need{Keys: []dlm.Key{k}}, func(b dlm.Batch, c *dlm.Change) (*dlm.LockState, error) {
		st := b.Lock(k)
		out, lease, _, err := st.Acquire(b.Now(), dlm.Request{ID: name, Tenant: "t", Key: k, Mode: dlm.Exclusive, HolderID: holder, TTL: time.Hour}, c)
		if err == nil && out != dlm.Granted {
			err = fmt.Errorf("acquire %s: outcome %v", name, out)
		}
		l = lease
		return st, err
	})
	return l, err
}

// release ends l, straight on the store.
func release(ctx context.Context, s dlm.Store, l dlm.Lease) error {
	return decide(ctx, s, &dlm.Need{Leases: []string{l.ID}}, func(b dlm.Batch, c *dlm.Change) (*dlm.LockState, error) {
		st := b.Lock(l.Key)
		if st == nil {
			return nil, errors.New("not held")
		}
		if _, ok := st.Release(b.Now(), l.ID, c); !ok {
			return nil, errors.New("not held")
		}
		return st, nil
	})
}

// decide runs one decision in a batch of its own, as the engine's group of
// one would, and commits what it changed.
func decide(ctx context.Context, s dlm.Store, need *dlm.Need, fn func(dlm.Batch, *dlm.Change) (*dlm.LockState, error)) error {
	b, err := s.Load(ctx, need)
	if err != nil {
		return err
	}
	var c dlm.Change
	st, err := fn(b, &c)
	if err != nil {
		b.Abort()
		return err
	}
	return b.Commit(ctx, []dlm.Save{{State: st, Change: &c}})
}

// checkHeld checks that a read of s finds every lease of leases held, and
// ended released.
func checkHeld(t *testing.T, s dlm.Store, leases []dlm.Lease, ended dlm.Lease) {
	t.Helper()
	ctx := t.Context()
	err := s.View(ctx, func(tx dlm.ReadTx) error {
		live, gone, err := tx.FindLease(ctx, ended.ID)
		if err != nil {
			return err
		}
		if live != nil || gone == nil || gone.Reason != dlm.Released {
			t.Errorf("released lease: live %+v, ended %+v; want it ended", live, gone)
		}
		if st, err := tx.LoadLock(ctx, ended.Key); err != nil || len(st.Holders) > 0 || st.Token != ended.Token {
			t.Errorf("released lock: %+v, %v; want no holders, token %d", st, err, ended.Token)
		}
		for _, l := range leases {
			st, err := tx.LoadLock(ctx, l.Key)
			if err != nil {
				return err
			}
			if v := st.View(tx.Now()); len(v.Holders) != 1 || v.Holders[0].ID != l.ID || v.Token != l.Token {
				t.Errorf("lock %s: %+v; want held by %s with token %d", l.Key.Name, v, l.ID, l.Token)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
