package postgres_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/dlmtest"
	"github.com/dlmhq/dlm/engine"
	"github.com/dlmhq/dlm/postgres"
)

// TestUsageRowsNotShared: a commit updates only its own backend's usage
// rows. Every other usage row of the tenant is held locked by an open
// transaction (as another instance's commit in flight would hold one), and
// acquires and releases still commit at once. With rows shared between
// backends (before: one of 64 drawn at random), they wait for the lock and
// time out.
func TestUsageRowsNotShared(t *testing.T) {
	c := newClusterWith(t, 1, engine.Options{}, postgres.Options{MaxConns: 8, OpTimeout: 3 * time.Second})
	e, ctx := c.engines[0], t.Context()
	cycle := func(name string) error {
		l, _, err := e.Acquire(ctx, creq(name, "h", dlm.Exclusive, 0))
		if err == nil {
			_, err = e.Release(ctx, ctenant, l.ID)
		}
		return err
	}
	if err := cycle("warm"); err != nil {
		t.Fatal(err)
	}
	conn := adminConn(t, c.url)
	// Rows of 64 other backends, counting nothing.
	if _, err := conn.Exec(ctx, `INSERT INTO `+c.schema+`.lease_usage (tenant, shard, n)
		SELECT $1, s, 0 FROM generate_series(1, 64) s ON CONFLICT DO NOTHING`, ctenant); err != nil {
		t.Fatal(err)
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	var locked int
	if err := tx.QueryRow(ctx, `WITH l AS (SELECT 1 FROM `+c.schema+`.lease_usage WHERE tenant = $1
			AND shard NOT IN (SELECT pid FROM pg_stat_activity WHERE application_name = 'dlm') FOR UPDATE)
		SELECT count(*) FROM l`, ctenant).Scan(&locked); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if err := cycle(fmt.Sprint("hot/", i)); err != nil {
			t.Fatalf("cycle %d with the %d other usage rows locked: %v", i, locked, err)
		}
	}
	t.Logf("10 cycles committed beside %d usage rows locked", locked)
	tx.Rollback(ctx)
	checkUsage(t, c.url, c.schema)
}

// TestFoldUsage: once a store's backends are gone, its usage rows are
// folded into the tenant's row 0, and every count stays what it was.
func TestFoldUsage(t *testing.T) {
	url, schema := freshSchema(t)
	a := open(t, url, schema, postgres.Options{MaxConns: 4})
	ea := engine.New(a, engine.Options{})
	ctx := t.Context()
	var ids []string
	for i := range 5 {
		l, _, err := ea.Acquire(ctx, creq(fmt.Sprint("f/", i), "h", dlm.Exclusive, 0))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, l.ID)
	}
	for _, id := range ids[:2] {
		if _, err := ea.Release(ctx, ctenant, id); err != nil {
			t.Fatal(err)
		}
	}
	ea.Close()
	a.Close()
	b := open(t, url, schema, postgres.Options{MaxConns: 4})
	conn := adminConn(t, url)
	dlmtest.Eventually(t, "the closed store's usage rows are folded", func() bool {
		if err := b.FoldUsage(ctx); err != nil {
			t.Fatal(err)
		}
		var rows, zero, sum int64
		if err := conn.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE shard = 0), coalesce(sum(n), 0)
			FROM `+schema+`.lease_usage WHERE tenant = $1`, ctenant).Scan(&rows, &zero, &sum); err != nil {
			t.Fatal(err)
		}
		if sum != 3 {
			t.Fatalf("%d leases counted, want 3", sum)
		}
		return rows == 1 && zero == 1
	})
	checkUsage(t, url, schema)
}
