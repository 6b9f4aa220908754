package postgres_test

import (
	"testing"

	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/postgres"
	"github.com/dlmhq/dlm/storetest"
)

// undoTerms takes the schema back to before migration 5 (event_id_block)
// and migration 4 (terms, groups and lock-delays).
const undoTerms = `DROP FUNCTION event_id_block; DROP INDEX locks_delay;
	ALTER TABLE locks DROP COLUMN delay_until;
	ALTER TABLE leases DROP COLUMN lim, DROP COLUMN lock_delay, DROP COLUMN max_hold;
	ALTER TABLE ended_leases DROP COLUMN lim, DROP COLUMN lock_delay, DROP COLUMN max_hold;
	ALTER TABLE waiters DROP COLUMN lim, DROP COLUMN lock_delay, DROP COLUMN max_hold, DROP COLUMN grp, DROP COLUMN group_keys;
	UPDATE schema_version SET version = 3;`

func TestMigrationAddsRequestedTTL(t *testing.T) {
	url, schema := freshSchema(t)
	storetest.RequestedTTLMigration(t, func() dlm.Store {
		return open(t, url, schema, postgres.Options{})
	}, func() {
		// Back to version 1: no terms, no requested_ttl, and event ids
		// from the counter row (migration 3 undone).
		_, err := adminConn(t, url).Exec(t.Context(), `SET search_path = `+schema+`;`+undoTerms+`
			ALTER TABLE leases DROP COLUMN requested_ttl;
			ALTER TABLE events ALTER COLUMN id DROP NOT NULL;
			CREATE INDEX events_pending ON events (seq) WHERE id IS NULL;
			CREATE TABLE event_counter (one boolean PRIMARY KEY DEFAULT true CHECK (one), last bigint NOT NULL);
			INSERT INTO event_counter (last) SELECT coalesce(max(id), 0) FROM events;
			DROP SEQUENCE event_ids;
			UPDATE schema_version SET version = 1`)
		if err != nil {
			t.Fatal(err)
		}
	})
}

func TestMigrationAddsTerms(t *testing.T) {
	url, schema := freshSchema(t)
	storetest.TermsMigration(t, func() dlm.Store {
		return open(t, url, schema, postgres.Options{})
	}, func() {
		if _, err := adminConn(t, url).Exec(t.Context(), `SET search_path = `+schema+`;`+undoTerms); err != nil {
			t.Fatal(err)
		}
	})
}
