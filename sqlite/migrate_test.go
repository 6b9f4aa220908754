package sqlite_test

import (
	"database/sql"
	"path/filepath"
	"testing"

	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/sqlite"
	"github.com/dlmhq/dlm/storetest"
)

func TestMigrationAddsRequestedTTL(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dlm.db")
	storetest.RequestedTTLMigration(t, func() dlm.Store {
		s, err := sqlite.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}, func() {
		db, err := sql.Open("sqlite", path)
		if err != nil {
			t.Fatal(err)
		}
		_, err = db.Exec(`ALTER TABLE leases DROP COLUMN requested_ttl; UPDATE schema_version SET version = 2`)
		if cerr := db.Close(); err != nil || cerr != nil {
			t.Fatal(err, cerr)
		}
	})
}
