package sqlite_test

import (
	"database/sql"
	"path/filepath"
	"testing"

	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/sqlite"
	"github.com/dlmhq/dlm/storetest"
)

// undoEventsIndex takes the schema back to before migration 5 (no index of
// events by lock).
const undoEventsIndex = `CREATE INDEX events_lock ON events (ns, name, id); UPDATE schema_version SET version = 4;`

// undoTerms takes the schema back to before migration 4 (terms, groups and
// lock-delays).
const undoTerms = undoEventsIndex + `DROP INDEX locks_delay;
	ALTER TABLE locks DROP COLUMN delay_until;
	ALTER TABLE leases DROP COLUMN lim; ALTER TABLE leases DROP COLUMN lock_delay; ALTER TABLE leases DROP COLUMN max_hold;
	ALTER TABLE ended_leases DROP COLUMN lim; ALTER TABLE ended_leases DROP COLUMN lock_delay; ALTER TABLE ended_leases DROP COLUMN max_hold;
	ALTER TABLE waiters DROP COLUMN lim; ALTER TABLE waiters DROP COLUMN lock_delay; ALTER TABLE waiters DROP COLUMN max_hold;
	ALTER TABLE waiters DROP COLUMN grp; ALTER TABLE waiters DROP COLUMN group_keys;
	UPDATE schema_version SET version = 3;`

func TestMigrationAddsRequestedTTL(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dlm.db")
	storetest.RequestedTTLMigration(t, opener(t, path), downgrader(t, path,
		undoTerms+`ALTER TABLE leases DROP COLUMN requested_ttl; UPDATE schema_version SET version = 2`))
}

func TestMigrationAddsTerms(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dlm.db")
	storetest.TermsMigration(t, opener(t, path), downgrader(t, path, undoTerms))
}

func TestMigrationDropsEventsLockIndex(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dlm.db")
	open := opener(t, path)
	s := open()
	if _, err := acquire(t.Context(), s, "a", "h"); err != nil {
		t.Fatal(err)
	}
	s.Close()
	downgrader(t, path, undoEventsIndex)()
	s = open()
	defer s.Close()
	var events []dlm.Event
	err := s.View(t.Context(), func(tx dlm.ReadTx) (err error) {
		events, err = tx.Events(t.Context(), dlm.EventFilter{Name: "a"})
		return err
	})
	if err != nil || len(events) != 1 {
		t.Fatalf("events of a after the migration: %v, %v", events, err)
	}
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM sqlite_master WHERE name = 'events_lock'`).Scan(&n); err != nil || n != 0 {
		t.Errorf("events_lock indexes after the migration: %d, %v", n, err)
	}
}

func opener(t *testing.T, path string) func() dlm.Store {
	return func() dlm.Store {
		s, err := sqlite.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
}

// downgrader returns a function that runs undo on the closed database.
func downgrader(t *testing.T, path, undo string) func() {
	return func() {
		db, err := sql.Open("sqlite", path)
		if err != nil {
			t.Fatal(err)
		}
		_, err = db.Exec(undo)
		if cerr := db.Close(); err != nil || cerr != nil {
			t.Fatal(err, cerr)
		}
	}
}
