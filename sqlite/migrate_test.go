package sqlite_test

import (
	"database/sql"
	"path/filepath"
	"testing"
	"time"

	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/engine"
	"github.com/dlmhq/dlm/sqlite"
)

// TestMigrationAddsRequestedTTL: a file whose leases were written before
// requested_ttl existed is migrated in place, and its leases keep answering
// idempotent retries, compared with their TTL.
func TestMigrationAddsRequestedTTL(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dlm.db")
	ctx := t.Context()
	r := engine.AcquireRequest{Tenant: "acme", Key: dlm.Key{Namespace: "acme", Name: "old"}, HolderID: "h",
		TTL: time.Minute, IdempotencyKey: "k"}
	s, err := sqlite.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	e := engine.New(s, engine.Options{})
	first, _, err := e.Acquire(ctx, r)
	e.Close()
	if cerr := s.Close(); err != nil || cerr != nil {
		t.Fatal(err, cerr)
	}
	// Back to the schema before the column, with the lease in it.
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	_, err = db.Exec(`ALTER TABLE leases DROP COLUMN requested_ttl; UPDATE schema_version SET version = 2`)
	if cerr := db.Close(); err != nil || cerr != nil {
		t.Fatal(err, cerr)
	}

	if s, err = sqlite.Open(path); err != nil {
		t.Fatal(err)
	}
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
