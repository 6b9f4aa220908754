package sqlite_test

import (
	"database/sql"
	"path/filepath"
	"testing"

	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/sqlite"
	"github.com/dlmhq/dlm/storetest"
)

// undoTerms takes the schema back to before migration 4 (terms, groups and
// lock-delays).
const undoTerms = `DROP INDEX locks_delay;
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
