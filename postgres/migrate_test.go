package postgres_test

import (
	"testing"

	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/postgres"
	"github.com/dlmhq/dlm/storetest"
)

func TestMigrationAddsRequestedTTL(t *testing.T) {
	url, schema := freshSchema(t)
	storetest.RequestedTTLMigration(t, func() dlm.Store {
		return open(t, url, schema, postgres.Options{})
	}, func() {
		// Back to version 1: no requested_ttl, and event ids from the
		// counter row (migration 3 undone).
		_, err := adminConn(t, url).Exec(t.Context(), `SET search_path = `+schema+`;
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
