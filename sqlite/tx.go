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

type readTx struct {
	q   querier
	now time.Time
}

var _ dlm.ReadTx = (*readTx)(nil)

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

const leaseCols = `id, tenant, ns, name, mode, holder, token, ttl, acquired_at, expires_at, lim, lock_delay, max_hold`

func scanLease(rows *sql.Rows, l *dlm.Lease, extra ...any) error {
	var ttl, acq, exp, delay, hold int64
	err := rows.Scan(append([]any{&l.ID, &l.Tenant, &l.Key.Namespace, &l.Key.Name, &l.Mode,
		&l.HolderID, &l.Token, &ttl, &acq, &exp, &l.Limit, &delay, &hold}, extra...)...)
	l.TTL, l.AcquiredAt, l.ExpiresAt = time.Duration(ttl), fromNanos(acq), fromNanos(exp)
	l.LockDelay, l.MaxHold = time.Duration(delay), time.Duration(hold)
	return err
}

// waiterCols are the columns of a waiter, which scanWaiter reads.
const waiterCols = `id, tenant, ns, name, seq, mode, holder, ttl, idem, ticket, queued_at, deadline, lim, lock_delay, max_hold, grp, group_keys`

func scanWaiter(rows *sql.Rows, w *dlm.Waiter) error {
	var idem, group, keys sql.NullString
	var ttl, queued, deadline, delay, hold int64
	err := rows.Scan(&w.ID, &w.Tenant, &w.Key.Namespace, &w.Key.Name, &w.Seq, &w.Mode, &w.HolderID, &ttl, &idem,
		&w.Ticket, &queued, &deadline, &w.Limit, &delay, &hold, &group, &keys)
	if err != nil {
		return err
	}
	w.TTL, w.IdempotencyKey, w.QueuedAt, w.Deadline = time.Duration(ttl), idem.String, fromNanos(queued), fromNanos(deadline)
	w.LockDelay, w.MaxHold, w.Group = time.Duration(delay), time.Duration(hold), group.String
	w.GroupKeys, err = parseGroupKeys(keys)
	return err
}

// nullTime is the column of a time that may be unset: NULL for the zero
// time, whose nanoseconds are out of range.
func nullTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return nanos(t)
}

func fromNullNanos(n sql.NullInt64) time.Time {
	if !n.Valid {
		return time.Time{}
	}
	return fromNanos(n.Int64)
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

func (tx *readTx) LoadLock(ctx context.Context, key dlm.Key) (*dlm.LockState, error) {
	s := &dlm.LockState{Key: key}
	err := tx.queryEach(ctx, func(r *sql.Rows) error {
		var delay sql.NullInt64
		err := r.Scan(&s.Token, &delay)
		s.DelayUntil = fromNullNanos(delay)
		return err
	}, `SELECT token, delay_until FROM locks WHERE ns = ? AND name = ?`, key.Namespace, key.Name)
	if err != nil {
		return nil, err
	}
	err = tx.queryEach(ctx, func(r *sql.Rows) error {
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
		err := scanWaiter(r, &w)
		s.Waiters = append(s.Waiters, w)
		return err
	}, `SELECT `+waiterCols+` FROM waiters WHERE ns = ? AND name = ? ORDER BY seq`, key.Namespace, key.Name)
	if err != nil {
		return nil, err
	}
	return s, nil
}

func (tx *readTx) FindLease(ctx context.Context, id string) (live *dlm.Lease, ended *dlm.EndedLease, err error) {
	err = tx.queryEach(ctx, func(r *sql.Rows) error {
		var l dlm.Lease
		err := scanHolder(r, &l)
		live = &l
		return err
	}, `SELECT `+holderCols+` FROM leases WHERE id = ?`, id)
	if err != nil || live != nil {
		return live, nil, err
	}
	err = tx.queryEach(ctx, func(r *sql.Rows) error {
		var e dlm.EndedLease
		var endedAt int64
		err := scanLease(r, &e.Lease, &e.Reason, &endedAt)
		e.EndedAt = fromNanos(endedAt)
		ended = &e
		return err
	}, `SELECT `+leaseCols+`, reason, ended_at FROM ended_leases WHERE id = ?`, id)
	return nil, ended, err
}

func (tx *readTx) FindIdempotent(ctx context.Context, tenant, idem string) (key dlm.Key, ok bool, err error) {
	err = tx.queryEach(ctx, func(r *sql.Rows) error {
		ok = true
		return r.Scan(&key.Namespace, &key.Name)
	}, `SELECT ns, name FROM leases WHERE tenant = ?1 AND idem = ?2
		UNION ALL SELECT ns, name FROM waiters WHERE tenant = ?1 AND idem = ?2 LIMIT 1`, tenant, idem)
	return key, ok, err
}

func (tx *readTx) ListLocks(ctx context.Context, ns, prefix, after string, limit int) ([]dlm.LockState, error) {
	// Names are ASCII below 0x7f, so prefix+"\x7f" bounds every name that
	// starts with prefix.
	var names []string
	err := tx.queryEach(ctx, func(r *sql.Rows) error {
		var n string
		names = append(names, n)
		return r.Scan(&names[len(names)-1])
	}, `SELECT name FROM leases WHERE ns = ?1 AND name > ?2 AND name >= ?3 AND name < ?4 AND expires_at > ?5
		UNION SELECT name FROM waiters WHERE ns = ?1 AND name > ?2 AND name >= ?3 AND name < ?4 AND deadline > ?5
		ORDER BY name LIMIT ?6`, ns, after, prefix, prefix+"\x7f", nanos(tx.now), limit)
	if err != nil {
		return nil, err
	}
	locks := make([]dlm.LockState, 0, len(names))
	for _, n := range names {
		s, err := tx.LoadLock(ctx, dlm.Key{Namespace: ns, Name: n})
		if err != nil {
			return nil, err
		}
		locks = append(locks, s.View(tx.now))
	}
	return locks, nil
}

func (tx *readTx) DueLocks(ctx context.Context, limit int) ([]dlm.Key, error) {
	var keys []dlm.Key
	err := tx.queryEach(ctx, func(r *sql.Rows) error {
		var k dlm.Key
		err := r.Scan(&k.Namespace, &k.Name)
		keys = append(keys, k)
		return err
	}, `SELECT ns, name FROM leases WHERE expires_at <= ?1
		UNION SELECT ns, name FROM waiters WHERE deadline <= ?1
		UNION SELECT ns, name FROM locks WHERE delay_until <= ?1 LIMIT ?2`, nanos(tx.now), limit)
	return keys, err
}

func (tx *readTx) NextDue(ctx context.Context) (time.Time, error) {
	var next sql.NullInt64
	err := tx.queryEach(ctx, func(r *sql.Rows) error { return r.Scan(&next) },
		`SELECT min(t) FROM (SELECT min(expires_at) AS t FROM leases UNION ALL SELECT min(deadline) FROM waiters
			UNION ALL SELECT min(delay_until) FROM locks)`)
	if err != nil || !next.Valid {
		return time.Time{}, err
	}
	return fromNanos(next.Int64), nil
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

// Stats implements dlm.ReadTx with one scan of each table's expiry index.
func (tx *readTx) Stats(ctx context.Context) (dlm.Stats, error) {
	var st dlm.Stats
	err := tx.queryEach(ctx, func(r *sql.Rows) error {
		var waiter bool
		var mode dlm.Mode
		var n int64
		if err := r.Scan(&waiter, &mode, &n); err != nil {
			return err
		}
		if waiter {
			st.Waiters.Add(mode, n)
		} else {
			st.Leases.Add(mode, n)
		}
		return nil
	}, `SELECT 0, mode, count(*) FROM leases WHERE expires_at > ?1 GROUP BY mode
		UNION ALL SELECT 1, mode, count(*) FROM waiters WHERE deadline > ?1 GROUP BY mode`, nanos(tx.now))
	return st, err
}
