package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// migrations build the schema step by step. Each runs once, in order, in the
// transaction that records it; append new steps, never edit old ones.
//
// Names are COLLATE "C": they are compared and ordered byte by byte, as
// cursors and prefixes expect, whatever the database's locale.
//
// Times are timestamptz (microseconds); every time the store writes comes
// from the database's clock (see batch.Now), and TTLs are whole milliseconds, so
// nothing is rounded. TTLs are nanoseconds. Modes, reasons and event types
// are the dlm constants.
//
// waiters, waiter_usage and instances are UNLOGGED: a waiter lives only as
// long as the request parked on it, and those die with a crash of PostgreSQL
// anyway. PostgreSQL empties unlogged tables together after a crash, so the
// waiter counts stay consistent with the waiters.
var migrations = []string{
	`CREATE TABLE locks (
		ns    text COLLATE "C" NOT NULL,
		name  text COLLATE "C" NOT NULL,
		token bigint NOT NULL DEFAULT 0, -- last fencing token issued; only grows
		PRIMARY KEY (ns, name)
	);
	CREATE TABLE leases (
		id          text PRIMARY KEY,
		tenant      text NOT NULL,
		ns          text COLLATE "C" NOT NULL,
		name        text COLLATE "C" NOT NULL,
		mode        smallint NOT NULL,
		holder      text NOT NULL,
		token       bigint NOT NULL,
		ttl         bigint NOT NULL,
		acquired_at timestamptz NOT NULL,
		expires_at  timestamptz NOT NULL,
		idem        text
	);
	CREATE INDEX leases_lock ON leases (ns, name);
	CREATE INDEX leases_expiry ON leases (expires_at);
	CREATE INDEX leases_idem ON leases (tenant, idem) WHERE idem IS NOT NULL;
	CREATE UNLOGGED TABLE waiters (
		id        text PRIMARY KEY,
		tenant    text NOT NULL,
		ns        text COLLATE "C" NOT NULL,
		name      text COLLATE "C" NOT NULL,
		seq       bigint NOT NULL,
		mode      smallint NOT NULL,
		holder    text NOT NULL,
		ttl       bigint NOT NULL,
		idem      text,
		ticket    text NOT NULL,
		queued_at timestamptz NOT NULL,
		deadline  timestamptz NOT NULL,
		instance  text NOT NULL -- the instance whose request waits on it
	);
	CREATE INDEX waiters_lock ON waiters (ns, name, seq);
	CREATE INDEX waiters_deadline ON waiters (deadline);
	CREATE INDEX waiters_idem ON waiters (tenant, idem) WHERE idem IS NOT NULL;
	CREATE INDEX waiters_instance ON waiters (instance);
	CREATE TABLE ended_leases (
		id          text PRIMARY KEY,
		tenant      text NOT NULL,
		ns          text COLLATE "C" NOT NULL,
		name        text COLLATE "C" NOT NULL,
		mode        smallint NOT NULL,
		holder      text NOT NULL,
		token       bigint NOT NULL,
		ttl         bigint NOT NULL,
		acquired_at timestamptz NOT NULL,
		expires_at  timestamptz NOT NULL,
		reason      smallint NOT NULL,
		ended_at    timestamptz NOT NULL
	);
	CREATE INDEX ended_leases_at ON ended_leases (ended_at);
	-- Events are inserted with a NULL id and numbered after commit, in
	-- commit order, by the cluster's one sequencer (see sequencer.go).
	-- seq only records insertion order, to number the rows of one
	-- transaction in the order they were written.
	CREATE TABLE events (
		seq    bigserial PRIMARY KEY,
		id     bigint UNIQUE,
		type   smallint NOT NULL,
		ns     text COLLATE "C" NOT NULL,
		name   text COLLATE "C" NOT NULL,
		holder text NOT NULL,
		mode   smallint NOT NULL,
		token  bigint NOT NULL,
		at     timestamptz NOT NULL
	);
	CREATE INDEX events_pending ON events (seq) WHERE id IS NULL;
	CREATE INDEX events_lock ON events (ns, name, id);
	CREATE INDEX events_at ON events (at);
	CREATE TABLE event_counter (
		one  boolean PRIMARY KEY DEFAULT true CHECK (one),
		last bigint NOT NULL -- the largest event id given out
	);
	INSERT INTO event_counter (last) VALUES (0);
	-- Per-tenant counts, split into shards so that concurrent transactions
	-- of one tenant rarely update the same row (see usageShards).
	CREATE TABLE lease_usage (
		tenant text NOT NULL,
		shard  integer NOT NULL,
		n      bigint NOT NULL,
		PRIMARY KEY (tenant, shard)
	);
	CREATE UNLOGGED TABLE waiter_usage (
		tenant text NOT NULL,
		shard  integer NOT NULL,
		n      bigint NOT NULL,
		PRIMARY KEY (tenant, shard)
	);
	-- One row per running dlm instance, refreshed every heartbeat.
	CREATE UNLOGGED TABLE instances (
		id      text PRIMARY KEY,
		seen_at timestamptz NOT NULL
	);
	CREATE TABLE tenants (
		name       text COLLATE "C" PRIMARY KEY,
		created_at timestamptz NOT NULL
	);
	CREATE TABLE api_keys (
		id         text PRIMARY KEY,
		tenant     text NOT NULL, -- '' for the admin key
		hash       bytea NOT NULL, -- SHA-256 of the key
		created_at timestamptz NOT NULL,
		revoked    boolean NOT NULL DEFAULT false
	);`,
	// The TTL a lease's acquire asked for, which renewals leave alone, for
	// comparing idempotent retries with. NULL in rows written before it (ttl
	// stands in then); adding a nullable column without a default rewrites
	// no rows and holds the table lock only briefly.
	`ALTER TABLE leases ADD COLUMN requested_ttl bigint;`,
	// Event ids come from a sequence at insert (see events.go), instead of
	// a counter under the numbering lock. Events a crashed writer left
	// unnumbered are numbered first, after every id given out.
	`UPDATE events e SET id = c.last + p.rn
		FROM (SELECT seq, row_number() OVER (ORDER BY seq) AS rn FROM events WHERE id IS NULL) p, event_counter c
		WHERE e.seq = p.seq;
	CREATE SEQUENCE event_ids;
	SELECT setval('event_ids', greatest((SELECT last FROM event_counter), (SELECT coalesce(max(id), 0) FROM events)) + 1, false);
	ALTER TABLE events ALTER COLUMN id SET NOT NULL;
	DROP INDEX events_pending;
	DROP TABLE event_counter;`,
	// The terms of an acquire (limit, lock-delay and max hold, durations in
	// nanoseconds; 0 in older rows: none), the multi-lock acquire a waiter
	// belongs to (grp, and group_keys: a JSON array of [namespace, name]),
	// and the end of a lock's lock-delay in force (NULL: none). Columns
	// with a constant default or none rewrite no rows.
	`ALTER TABLE locks ADD COLUMN delay_until timestamptz;
	CREATE INDEX locks_delay ON locks (delay_until) WHERE delay_until IS NOT NULL;
	ALTER TABLE leases ADD COLUMN lim integer NOT NULL DEFAULT 0,
		ADD COLUMN lock_delay bigint NOT NULL DEFAULT 0, ADD COLUMN max_hold bigint NOT NULL DEFAULT 0;
	ALTER TABLE ended_leases ADD COLUMN lim integer NOT NULL DEFAULT 0,
		ADD COLUMN lock_delay bigint NOT NULL DEFAULT 0, ADD COLUMN max_hold bigint NOT NULL DEFAULT 0;
	ALTER TABLE waiters ADD COLUMN lim integer NOT NULL DEFAULT 0,
		ADD COLUMN lock_delay bigint NOT NULL DEFAULT 0, ADD COLUMN max_hold bigint NOT NULL DEFAULT 0,
		ADD COLUMN grp text, ADD COLUMN group_keys jsonb;`,
	// A commit's events take a block of consecutive ids (events.go): the
	// sequence hands them out one call at a time, so two commits calling it
	// at once would interleave theirs, and a multi-lock acquire's grants
	// would not be adjacent in the log. The block is taken under a
	// session-level advisory lock held only while the function runs, never
	// across a round trip or a commit, and given back if it fails.
	`CREATE FUNCTION event_id_block(n integer) RETURNS SETOF bigint LANGUAGE plpgsql AS $$
	DECLARE
		k constant bigint := 'event_ids'::regclass::oid::bigint;
	BEGIN
		PERFORM pg_advisory_lock(k);
		BEGIN
			RETURN QUERY SELECT nextval('event_ids') FROM generate_series(1, n);
		EXCEPTION WHEN OTHERS OR query_canceled THEN
			PERFORM pg_advisory_unlock(k);
			RAISE;
		END;
		PERFORM pg_advisory_unlock(k);
	END $$;`,
}

// migrate brings the schema up to date. It holds a transaction-scoped
// advisory lock while it works, so that instances starting together migrate
// one after the other: the first does the work, the others find it done.
func migrate(ctx context.Context, conn *pgx.Conn, schema string) error {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, lockKey("migrate", schema)); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS `+pgx.Identifier{schema}.Sanitize()); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)`); err != nil {
		return err
	}
	var version int
	err = tx.QueryRow(ctx, `SELECT version FROM schema_version`).Scan(&version)
	if errors.Is(err, pgx.ErrNoRows) {
		if _, err := tx.Exec(ctx, `INSERT INTO schema_version VALUES (0)`); err != nil {
			return err
		}
	} else if err != nil {
		return err
	}
	if version > len(migrations) {
		return fmt.Errorf("database schema version %d is newer than this program (%d)", version, len(migrations))
	}
	for v := version; v < len(migrations); v++ {
		if _, err := tx.Exec(ctx, migrations[v]); err != nil {
			return fmt.Errorf("migration %d: %w", v+1, err)
		}
	}
	if _, err := tx.Exec(ctx, `UPDATE schema_version SET version = $1`, len(migrations)); err != nil {
		return err
	}
	return tx.Commit(ctx)
}
