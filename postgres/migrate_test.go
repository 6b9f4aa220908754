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
		_, err := adminConn(t, url).Exec(t.Context(), `ALTER TABLE `+schema+`.leases DROP COLUMN requested_ttl;
			UPDATE `+schema+`.schema_version SET version = 1`)
		if err != nil {
			t.Fatal(err)
		}
	})
}
