package postgres_test

import (
	"testing"
	"time"

	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/engine"
	"github.com/dlmhq/dlm/postgres"
)

// TestMigrationAddsRequestedTTL: a database whose leases were written before
// requested_ttl existed is migrated in place, and its leases keep answering
// idempotent retries, compared with their TTL.
func TestMigrationAddsRequestedTTL(t *testing.T) {
	url, schema := freshSchema(t)
	ctx := t.Context()
	r := engine.AcquireRequest{Tenant: "acme", Key: dlm.Key{Namespace: "acme", Name: "old"}, HolderID: "h",
		TTL: time.Minute, IdempotencyKey: "k"}
	s := open(t, url, schema, postgres.Options{})
	e := engine.New(s, engine.Options{})
	first, _, err := e.Acquire(ctx, r)
	e.Close()
	s.Close()
	if err != nil {
		t.Fatal(err)
	}
	// Back to the schema before the column, with the lease in it.
	conn := adminConn(t, url)
	if _, err := conn.Exec(ctx, `ALTER TABLE `+schema+`.leases DROP COLUMN requested_ttl;
		UPDATE `+schema+`.schema_version SET version = 1`); err != nil {
		t.Fatal(err)
	}

	s = open(t, url, schema, postgres.Options{})
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
