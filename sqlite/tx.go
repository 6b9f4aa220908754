package sqlite

import (
	"context"
	"database/sql"
	"slices"
	"time"

	"github.com/dlmhq/dlm"
)

// querier is what a read needs: the write connection's statement cache or a
// read-only transaction.
type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

type readTx struct {
	q   querier
	now time.Time
}

// writeTx is the committer's transaction. Locks are read from the
// committer's memTable under the overlays of the batch so far and of this
// Update. The few reads of lock state that memory cannot answer (the token
// of a lock long idle, an ended lease) look at the batches the applier has
// not yet written, then at the file through a read connection (file). Any
// other read or write of the file takes the write connection (readTx.q is
// a takingQuerier).
type writeTx struct {
	readTx
	file      readTx
	c         *committer
	op        *overlay // this Update's saves
	batch     *overlay // the saves of earlier Updates in the batch
	lastEvent int64    // the last event ID given out in this batch
	savepoint bool     // this Update has opened its savepoint
	direct    bool     // this Update changed rows directly (see exec)
}

var (
	_ dlm.ReadTx = (*readTx)(nil)
	_ dlm.Tx     = (*writeTx)(nil)
)

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

func (tx *readTx) LoadLock(ctx context.Context, key dlm.Key) (*dlm.LockState, error) {
	s := &dlm.LockState{Key: key}
	err := tx.queryEach(ctx, func(r *sql.Rows) error { return r.Scan(&s.Token) },
		`SELECT token FROM locks WHERE ns = ? AND name = ?`, key.Namespace, key.Name)
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
		UNION SELECT ns, name FROM waiters WHERE deadline <= ?1 LIMIT ?2`, nanos(tx.now), limit)
	return keys, err
}

func (tx *readTx) NextDue(ctx context.Context) (time.Time, error) {
	var next sql.NullInt64
	err := tx.queryEach(ctx, func(r *sql.Rows) error { return r.Scan(&next) },
		`SELECT min(t) FROM (SELECT min(expires_at) AS t FROM leases UNION ALL SELECT min(deadline) FROM waiters)`)
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

func (tx *writeTx) Usage(ctx context.Context, tenant string) (leases, waiters int64, err error) {
	u := tx.c.usage[tenant]
	b, o := tx.batch.usage[tenant], tx.op.usage[tenant]
	return u.leases + b.leases + o.leases, u.waiters + b.waiters + o.waiters, nil
}

// begin resets tx for the next Update of the batch.
func (tx *writeTx) begin() {
	tx.op.reset()
	tx.savepoint, tx.direct = false, false
}

// exec runs a write at once, for the rare writes that are not lock state
// (tenants, keys, pruning). The first one of an Update opens a savepoint, so
// that the Update's failure can undo its own writes alone. Savepoints are
// released all at once by COMMIT. A write that changed rows marks the
// Update direct: the journal does not record it, so its batch is synced.
func (tx *writeTx) exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if !tx.savepoint {
		if _, err := tx.q.ExecContext(ctx, `SAVEPOINT op`); err != nil {
			return nil, unavailable(err)
		}
		tx.savepoint = true
	}
	res, err := tx.q.ExecContext(ctx, query, args...)
	if err != nil {
		return nil, unavailable(err)
	}
	if n, err := res.RowsAffected(); err != nil || n > 0 {
		tx.direct = true
	}
	return res, nil
}

// write is exec for writes whose result is not needed.
func (tx *writeTx) write(ctx context.Context, query string, args ...any) error {
	_, err := tx.exec(ctx, query, args...)
	return err
}

// saved returns the state of k that this Update or an earlier one of the
// batch saved, or nil.
func (tx *writeTx) saved(k dlm.Key) *dlm.LockState {
	if s := tx.op.locks[k]; s != nil {
		return s
	}
	return tx.batch.locks[k]
}

// LoadLock implements dlm.Tx from memory. A lock that is not there has no
// holders or waiters; only its fencing token may be in a pending batch or
// the file, and only if the key filter has seen it.
func (tx *writeTx) LoadLock(ctx context.Context, key dlm.Key) (*dlm.LockState, error) {
	if s := tx.saved(key); s != nil {
		return clone(s), nil
	}
	if s := tx.c.mem.state(key); s != nil {
		return s, nil
	}
	s := &dlm.LockState{Key: key}
	if !tx.c.known.mayHave(key) {
		return s, nil
	}
	for _, b := range slices.Backward(tx.c.pending) {
		if t, ok := b.o.tokens[key]; ok {
			s.Token = t
			return s, nil
		}
	}
	err := tx.file.queryEach(ctx, func(r *sql.Rows) error { return r.Scan(&s.Token) },
		`SELECT token FROM locks WHERE ns = ? AND name = ?`, key.Namespace, key.Name)
	return s, err
}

// FindLease implements dlm.Tx: live leases from memory, ended ones from the
// file (where this batch's own writes are visible).
func (tx *writeTx) FindLease(ctx context.Context, id string) (*dlm.Lease, *dlm.EndedLease, error) {
	k, ok := tx.op.leases[id]
	if !ok {
		k, ok = tx.batch.leases[id]
	}
	if !ok {
		k, ok = tx.c.mem.leases[id]
	}
	if ok {
		if s := tx.saved(k); s != nil {
			for _, h := range s.Holders {
				if h.ID == id {
					return &h, nil, nil
				}
			}
		} else if l := tx.c.mem.lease(k, id); l != nil {
			return l, nil, nil
		}
	}
	if e := tx.op.endedByID[id]; e != nil {
		return nil, e, nil
	}
	if e := tx.batch.endedByID[id]; e != nil {
		return nil, e, nil
	}
	for _, b := range slices.Backward(tx.c.pending) {
		if e := b.o.endedByID[id]; e != nil {
			return nil, e, nil
		}
	}
	_, ended, err := tx.file.FindLease(ctx, id)
	return nil, ended, err
}

// DueLocks implements dlm.Tx from the file, which may lag the pending
// batches: the answer is a hint, and the engine expires each lock it names
// on its current state.
func (tx *writeTx) DueLocks(ctx context.Context, limit int) ([]dlm.Key, error) {
	return tx.file.DueLocks(ctx, limit)
}

// takingQuerier runs the write transaction's other reads and its writes on
// the write connection, taking it from the applier first (committer.take).
type takingQuerier struct{ c *committer }

func (q takingQuerier) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if err := q.c.take(ctx); err != nil {
		return nil, err
	}
	return q.c.w.stmts.ExecContext(ctx, query, args...)
}

func (q takingQuerier) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if err := q.c.take(ctx); err != nil {
		return nil, err
	}
	return q.c.w.stmts.QueryContext(ctx, query, args...)
}

// FindIdempotent implements dlm.Tx from memory.
func (tx *writeTx) FindIdempotent(ctx context.Context, tenant, idem string) (dlm.Key, bool, error) {
	ik := idemKey{tenant, idem}
	for _, m := range []map[idemKey]dlm.Key{tx.op.idem, tx.batch.idem, tx.c.mem.idem} {
		k, ok := m[ik]
		if !ok {
			continue
		}
		// The index may name a lock whose lease or waiter has since gone.
		if s := tx.saved(k); s != nil {
			for _, h := range s.Holders {
				if h.Tenant == tenant && h.IdempotencyKey == idem {
					return k, true, nil
				}
			}
			for _, w := range s.Waiters {
				if w.Tenant == tenant && w.IdempotencyKey == idem {
					return k, true, nil
				}
			}
		} else if tx.c.mem.hasIdem(k, tenant, idem) {
			return k, true, nil
		}
	}
	return dlm.Key{}, false, nil
}

// Save implements dlm.Tx. The rows are written when the batch commits
// (committer.flush); until then the overlays answer for them.
func (tx *writeTx) Save(ctx context.Context, s *dlm.LockState, c *dlm.Change) error {
	for i := range c.Events {
		tx.lastEvent++
		c.Events[i].ID = tx.lastEvent
	}
	tx.op.save(s, c)
	return nil
}

func (tx *writeTx) CreateTenant(ctx context.Context, t dlm.Tenant) error {
	return tx.write(ctx, `INSERT INTO tenants (name, created_at) VALUES (?, ?)`, t.Name, nanos(t.CreatedAt))
}

func (tx *writeTx) PutAPIKey(ctx context.Context, k dlm.APIKey) error {
	return tx.write(ctx, `INSERT INTO api_keys (id, tenant, hash, created_at) VALUES (?, ?, ?, ?)`,
		k.ID, k.Tenant, k.Hash, nanos(k.CreatedAt))
}

func (tx *writeTx) RevokeAPIKey(ctx context.Context, tenant, id string) (bool, error) {
	res, err := tx.exec(ctx, `UPDATE api_keys SET revoked = 1 WHERE tenant = ? AND id = ?`, tenant, id)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

func (tx *writeTx) PruneEnded(ctx context.Context, before time.Time) error {
	return tx.write(ctx, `DELETE FROM ended_leases WHERE ended_at < ?`, nanos(before))
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
