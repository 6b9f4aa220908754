package sqlite

import (
	"context"
	"database/sql"
	"time"

	"github.com/dlmhq/dlm"
)

// querier is what a read or a direct write needs: a connection's statement
// cache or a read-only transaction.
type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// readTx reads the file: history, tenants and keys for a viewTx, and what
// memory does not hold for a batch and for loading memory.
type readTx struct {
	q   querier
	now time.Time
}

func (tx *readTx) Now() time.Time { return tx.now }

func nanos(t time.Time) int64     { return t.UnixNano() }
func fromNanos(n int64) time.Time { return time.Unix(0, n).UTC() }
func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// queryEach runs query and calls scan for each row.
// Storage errors come out as unavailable.
func (tx *readTx) queryEach(ctx context.Context, scan func(*sql.Rows) error, query string, args ...any) error {
	rows, err := tx.q.QueryContext(ctx, query, args...)
	if err != nil {
		return unavailable(err)
	}
	defer rows.Close()
	for rows.Next() {
		if err := scan(rows); err != nil {
			return unavailable(err)
		}
	}
	return unavailable(rows.Err())
}

const leaseCols = `id, tenant, ns, name, mode, holder, token, ttl, acquired_at, expires_at`

func scanLease(rows *sql.Rows, l *dlm.Lease, extra ...any) error {
	var ttl, acq, exp int64
	err := rows.Scan(append([]any{&l.ID, &l.Tenant, &l.Key.Namespace, &l.Key.Name, &l.Mode,
		&l.HolderID, &l.Token, &ttl, &acq, &exp}, extra...)...)
	l.TTL, l.AcquiredAt, l.ExpiresAt = time.Duration(ttl), fromNanos(acq), fromNanos(exp)
	return err
}

// holderCols are the columns of a live lease, which scanHolder reads.
const holderCols = leaseCols + `, idem, requested_ttl`

// scanHolder scans holderCols. A lease written before requested_ttl existed
// has it NULL: its TTL then stands in for it.
func scanHolder(rows *sql.Rows, l *dlm.Lease) error {
	var idem sql.NullString
	var requested sql.NullInt64
	err := scanLease(rows, l, &idem, &requested)
	l.IdempotencyKey, l.RequestedTTL = idem.String, l.TTL
	if requested.Valid {
		l.RequestedTTL = time.Duration(requested.Int64)
	}
	return err
}

// loadLock reads the state of key from the file, for loading memory.
func (tx *readTx) loadLock(ctx context.Context, key dlm.Key) (*dlm.LockState, error) {
	s := &dlm.LockState{Key: key}
	if err := tx.token(ctx, s); err != nil {
		return nil, err
	}
	err := tx.queryEach(ctx, func(r *sql.Rows) error {
		var l dlm.Lease
		err := scanHolder(r, &l)
		s.Holders = append(s.Holders, l)
		return err
	}, `SELECT `+holderCols+` FROM leases WHERE ns = ? AND name = ? ORDER BY token`, key.Namespace, key.Name)
	if err != nil {
		return nil, err
	}
	err = tx.queryEach(ctx, func(r *sql.Rows) error {
		var w dlm.Waiter
		var idem sql.NullString
		var ttl, queued, deadline int64
		err := r.Scan(&w.ID, &w.Tenant, &w.Seq, &w.Mode, &w.HolderID, &ttl, &idem, &w.Ticket, &queued, &deadline)
		w.Key, w.TTL, w.IdempotencyKey = key, time.Duration(ttl), idem.String
		w.QueuedAt, w.Deadline = fromNanos(queued), fromNanos(deadline)
		s.Waiters = append(s.Waiters, w)
		return err
	}, `SELECT id, tenant, seq, mode, holder, ttl, idem, ticket, queued_at, deadline
		FROM waiters WHERE ns = ? AND name = ? ORDER BY seq`, key.Namespace, key.Name)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// token reads the last fencing token of s's lock from the file into s.
func (tx *readTx) token(ctx context.Context, s *dlm.LockState) error {
	return tx.queryEach(ctx, func(r *sql.Rows) error { return r.Scan(&s.Token) },
		`SELECT token FROM locks WHERE ns = ? AND name = ?`, s.Key.Namespace, s.Key.Name)
}

// endedLease finds an ended lease in the file.
func (tx *readTx) endedLease(ctx context.Context, id string) (ended *dlm.EndedLease, err error) {
	err = tx.queryEach(ctx, func(r *sql.Rows) error {
		var e dlm.EndedLease
		var endedAt int64
		err := scanLease(r, &e.Lease, &e.Reason, &endedAt)
		e.EndedAt = fromNanos(endedAt)
		ended = &e
		return err
	}, `SELECT `+leaseCols+`, reason, ended_at FROM ended_leases WHERE id = ?`, id)
	return ended, err
}

func (tx *readTx) Tenants(ctx context.Context) ([]dlm.Tenant, error) {
	var ts []dlm.Tenant
	err := tx.queryEach(ctx, func(r *sql.Rows) error {
		var t dlm.Tenant
		var at int64
		err := r.Scan(&t.Name, &at)
		t.CreatedAt = fromNanos(at)
		ts = append(ts, t)
		return err
	}, `SELECT name, created_at FROM tenants ORDER BY name`)
	return ts, err
}

func (tx *readTx) Tenant(ctx context.Context, name string) (t dlm.Tenant, ok bool, err error) {
	err = tx.queryEach(ctx, func(r *sql.Rows) error {
		var at int64
		ok = true
		err := r.Scan(&t.Name, &at)
		t.CreatedAt = fromNanos(at)
		return err
	}, `SELECT name, created_at FROM tenants WHERE name = ?`, name)
	return t, ok, err
}

func (tx *readTx) APIKey(ctx context.Context, id string) (k dlm.APIKey, ok bool, err error) {
	err = tx.queryEach(ctx, func(r *sql.Rows) error {
		var at int64
		ok = true
		err := r.Scan(&k.ID, &k.Tenant, &k.Hash, &at, &k.Revoked)
		k.CreatedAt = fromNanos(at)
		return err
	}, `SELECT id, tenant, hash, created_at, revoked FROM api_keys WHERE id = ?`, id)
	return k, ok, err
}
