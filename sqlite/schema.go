package sqlite

import (
	"context"
	"database/sql"
	"fmt"
)

// migrations build the schema step by step. Each runs once, in order, in the
// transaction that records it; append new steps, never edit old ones.
//
// Times are unix nanoseconds, so no precision is lost and comparisons are
// integer comparisons. Modes, reasons and event types are the dlm constants.
var migrations = []string{
	`CREATE TABLE locks (
		ns    TEXT NOT NULL,
		name  TEXT NOT NULL,
		token INTEGER NOT NULL, -- last fencing token issued; only grows
		PRIMARY KEY (ns, name)
	) WITHOUT ROWID;
	CREATE TABLE leases (
		id          TEXT PRIMARY KEY,
		tenant      TEXT NOT NULL,
		ns          TEXT NOT NULL,
		name        TEXT NOT NULL,
		mode        INTEGER NOT NULL,
		holder      TEXT NOT NULL,
		token       INTEGER NOT NULL,
		ttl         INTEGER NOT NULL,
		acquired_at INTEGER NOT NULL,
		expires_at  INTEGER NOT NULL,
		idem        TEXT
	) WITHOUT ROWID;
	CREATE INDEX leases_lock ON leases (ns, name);
	CREATE INDEX leases_expiry ON leases (expires_at);
	CREATE INDEX leases_idem ON leases (tenant, idem) WHERE idem IS NOT NULL;
	CREATE TABLE waiters (
		id        TEXT PRIMARY KEY,
		tenant    TEXT NOT NULL,
		ns        TEXT NOT NULL,
		name      TEXT NOT NULL,
		seq       INTEGER NOT NULL,
		mode      INTEGER NOT NULL,
		holder    TEXT NOT NULL,
		ttl       INTEGER NOT NULL,
		idem      TEXT,
		ticket    TEXT NOT NULL,
		queued_at INTEGER NOT NULL,
		deadline  INTEGER NOT NULL
	) WITHOUT ROWID;
	CREATE INDEX waiters_lock ON waiters (ns, name, seq);
	CREATE INDEX waiters_deadline ON waiters (deadline);
	CREATE INDEX waiters_idem ON waiters (tenant, idem) WHERE idem IS NOT NULL;
	CREATE TABLE ended_leases (
		id          TEXT PRIMARY KEY,
		tenant      TEXT NOT NULL,
		ns          TEXT NOT NULL,
		name        TEXT NOT NULL,
		mode        INTEGER NOT NULL,
		holder      TEXT NOT NULL,
		token       INTEGER NOT NULL,
		ttl         INTEGER NOT NULL,
		acquired_at INTEGER NOT NULL,
		expires_at  INTEGER NOT NULL,
		reason      INTEGER NOT NULL,
		ended_at    INTEGER NOT NULL
	) WITHOUT ROWID;
	CREATE INDEX ended_leases_at ON ended_leases (ended_at);
	CREATE TABLE events (
		id     INTEGER PRIMARY KEY AUTOINCREMENT, -- never reused, even after pruning
		type   INTEGER NOT NULL,
		ns     TEXT NOT NULL,
		name   TEXT NOT NULL,
		holder TEXT NOT NULL,
		mode   INTEGER NOT NULL,
		token  INTEGER NOT NULL,
		at     INTEGER NOT NULL
	);
	CREATE TABLE tenants (
		name       TEXT PRIMARY KEY,
		created_at INTEGER NOT NULL
	) WITHOUT ROWID;
	CREATE TABLE api_keys (
		id         TEXT PRIMARY KEY,
		tenant     TEXT NOT NULL, -- '' for the admin key
		hash       BLOB NOT NULL, -- SHA-256 of the key
		created_at INTEGER NOT NULL,
		revoked    INTEGER NOT NULL DEFAULT 0
	) WITHOUT ROWID;`,
	`CREATE INDEX events_lock ON events (ns, name, id);
	CREATE INDEX events_at ON events (at);`,
	// The TTL a lease's acquire asked for, which renewals leave alone, for
	// comparing idempotent retries with (NULL in older rows: ttl then).
	`ALTER TABLE leases ADD COLUMN requested_ttl INTEGER;`,
	// The terms of an acquire (limit, lock-delay and max hold, durations in
	// nanoseconds; 0 in older rows: none), the multi-lock acquire a waiter
	// belongs to (grp, and group_keys: a JSON array of [namespace, name]),
	// and the end of a lock's lock-delay in force (NULL: none). Adding
	// columns with a constant default rewrites no rows.
	`ALTER TABLE locks ADD COLUMN delay_until INTEGER;
	CREATE INDEX locks_delay ON locks (delay_until) WHERE delay_until IS NOT NULL;
	ALTER TABLE leases ADD COLUMN lim INTEGER NOT NULL DEFAULT 0;
	ALTER TABLE leases ADD COLUMN lock_delay INTEGER NOT NULL DEFAULT 0;
	ALTER TABLE leases ADD COLUMN max_hold INTEGER NOT NULL DEFAULT 0;
	ALTER TABLE ended_leases ADD COLUMN lim INTEGER NOT NULL DEFAULT 0;
	ALTER TABLE ended_leases ADD COLUMN lock_delay INTEGER NOT NULL DEFAULT 0;
	ALTER TABLE ended_leases ADD COLUMN max_hold INTEGER NOT NULL DEFAULT 0;
	ALTER TABLE waiters ADD COLUMN lim INTEGER NOT NULL DEFAULT 0;
	ALTER TABLE waiters ADD COLUMN lock_delay INTEGER NOT NULL DEFAULT 0;
	ALTER TABLE waiters ADD COLUMN max_hold INTEGER NOT NULL DEFAULT 0;
	ALTER TABLE waiters ADD COLUMN grp TEXT;
	ALTER TABLE waiters ADD COLUMN group_keys TEXT;`,
	// No index of events by lock: it put each event on its lock's own page,
	// so that a window of the applier touched a page per lock, which was
	// two thirds of what writing an event cost (PERFORMANCE.md, "The
	// events' lock index"). Reads follow the log in id order; those of one
	// lock or prefix filter that scan, bounded by the log's retention.
	`DROP INDEX events_lock;`,
}

// migrate brings the schema up to date on the writer connection. created
// reports whether the database had no schema at all before.
func migrate(ctx context.Context, conn *sql.Conn) (created bool, err error) {
	if _, err := conn.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)`); err != nil {
		return false, err
	}
	var version int
	err = conn.QueryRowContext(ctx, `SELECT version FROM schema_version`).Scan(&version)
	if err == sql.ErrNoRows {
		created = true
		if _, err := conn.ExecContext(ctx, `INSERT INTO schema_version VALUES (0)`); err != nil {
			return false, err
		}
	} else if err != nil {
		return false, err
	}
	if version > len(migrations) {
		return false, fmt.Errorf("database schema version %d is newer than this program (%d)", version, len(migrations))
	}
	for v := version; v < len(migrations); v++ {
		if err := inTx(ctx, conn, func() error {
			if _, err := conn.ExecContext(ctx, migrations[v]); err != nil {
				return fmt.Errorf("migration %d: %w", v+1, err)
			}
			_, err := conn.ExecContext(ctx, `UPDATE schema_version SET version = ?`, v+1)
			return err
		}); err != nil {
			return false, err
		}
	}
	return created, nil
}

// inTx runs fn between BEGIN IMMEDIATE and COMMIT on conn.
func inTx(ctx context.Context, conn *sql.Conn, fn func() error) error {
	if _, err := conn.ExecContext(ctx, `BEGIN IMMEDIATE`); err != nil {
		return err
	}
	if err := fn(); err != nil {
		_, _ = conn.ExecContext(ctx, `ROLLBACK`)
		return err
	}
	_, err := conn.ExecContext(ctx, `COMMIT`)
	return err
}
