package postgres

import (
	"context"
	"time"

	"github.com/dlmhq/dlm"
	"github.com/jackc/pgx/v5"
)

// view is the dlm.ReadTx of a View: a read-only REPEATABLE READ
// transaction, begun with its first read, so that all its reads see one
// snapshot. Each read is one round trip (the first also carries BEGIN and
// the read of Now).
type view struct {
	s    *Store
	conn *pgx.Conn
	ctx  context.Context // the View's, bounded by OpTimeout
	now  time.Time       // clock_timestamp() when the snapshot was taken
	// A View that reads events settles the log first (events.go): it
	// reads ids up to upto.
	settled bool
	upto    int64
}

var _ dlm.ReadTx = (*view)(nil)

// View implements dlm.Store.
func (s *Store) View(ctx context.Context, fn func(dlm.ReadTx) error) error {
	octx, done, err := s.call(ctx)
	if err != nil {
		return err
	}
	defer done()
	conn, err := s.pool.Acquire(octx)
	if err != nil {
		return unavailable(err)
	}
	// The pool discards a connection left in a transaction: if the
	// ROLLBACK fails, so be it.
	defer conn.Release()
	v := &view{s: s, conn: conn.Conn(), ctx: octx}
	err = fn(v)
	if !v.conn.IsClosed() && v.conn.PgConn().TxStatus() != 'I' {
		_, _ = v.conn.Exec(octx, `ROLLBACK`)
	}
	return unavailable(err)
}

// read sends the statements that build queues in one round trip, after
// BEGIN and the read of Now if this is the first.
func (v *view) read(build func(pb *pgx.Batch)) error {
	pb := &pgx.Batch{}
	first := v.now.IsZero()
	if first {
		pb.Queue(`BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY`)
		pb.Queue(`SELECT clock_timestamp()`).QueryRow(func(r pgx.Row) error { return r.Scan(&v.now) })
	}
	if build != nil {
		build(pb)
	}
	if err := v.conn.SendBatch(v.ctx, pb).Close(); err != nil {
		return err
	}
	v.now = v.now.UTC()
	return nil
}

// query runs one query and calls scan for each row.
func (v *view) query(scan func(pgx.Rows) error, sql string, args ...any) error {
	return v.read(func(pb *pgx.Batch) { queueQuery(pb, scan, sql, args...) })
}

// Now implements dlm.ReadTx: the database's clock_timestamp() as the
// snapshot was taken. If nothing has been read yet it costs a round trip;
// if that fails, the View's next read fails too, and Now returns the local
// time meanwhile.
func (v *view) Now() time.Time {
	if err := v.ensureNow(); err != nil {
		return time.Now()
	}
	return v.now
}

func (v *view) ensureNow() error {
	if !v.now.IsZero() {
		return nil
	}
	return v.read(nil)
}

func (v *view) deadAfter() float64 { return v.s.opts.DeadAfter.Seconds() }

// LoadLock implements dlm.ReadTx. Waiters of instances that are gone are
// left out.
func (v *view) LoadLock(ctx context.Context, key dlm.Key) (*dlm.LockState, error) {
	states, err := v.loadLocks([]dlm.Key{key})
	if err != nil {
		return nil, err
	}
	return states[key], nil
}

// loadLocks loads the states of keys in one round trip; every key answers,
// used or not.
func (v *view) loadLocks(keys []dlm.Key) (map[dlm.Key]*dlm.LockState, error) {
	states := map[dlm.Key]*dlm.LockState{}
	ns, names := keyColumns(keys)
	err := v.read(func(pb *pgx.Batch) {
		queueStates(pb, `SELECT * FROM unnest($1::text[], $2::text[])`, []any{ns, names}, false, v.s.opts.DeadAfter,
			states, func(dlm.Waiter) {})
	})
	for _, k := range keys {
		if states[k] == nil {
			states[k] = &dlm.LockState{Key: k}
		}
	}
	return states, err
}

// FindLease implements dlm.ReadTx in one round trip.
func (v *view) FindLease(ctx context.Context, id string) (live *dlm.Lease, ended *dlm.EndedLease, err error) {
	err = v.read(func(pb *pgx.Batch) {
		queueQuery(pb, func(r pgx.Rows) error {
			live = &dlm.Lease{}
			return scanHolder(r, live)
		}, `SELECT `+holderCols+` FROM leases WHERE id = $1`, id)
		queueQuery(pb, func(r pgx.Rows) error {
			ended = &dlm.EndedLease{}
			return scanEnded(r, ended)
		}, `SELECT `+leaseCols+`, reason, ended_at FROM ended_leases WHERE id = $1`, id)
	})
	if live != nil {
		ended = nil
	}
	return live, ended, err
}

// FindIdempotent implements dlm.ReadTx.
func (v *view) FindIdempotent(ctx context.Context, tenant, idem string) (dlm.Key, bool, error) {
	found := map[dlm.IdempotencyKey]dlm.Key{}
	k := dlm.IdempotencyKey{Tenant: tenant, Key: idem}
	err := v.read(func(pb *pgx.Batch) { queueIdempotent(pb, []dlm.IdempotencyKey{k}, v.s.opts.DeadAfter, found) })
	key, ok := found[k]
	return key, ok, err
}

// ListLocks implements dlm.ReadTx in two round trips: the names, then
// their states.
func (v *view) ListLocks(ctx context.Context, ns, prefix, after string, limit int) ([]dlm.LockState, error) {
	if err := v.ensureNow(); err != nil {
		return nil, err
	}
	// Names are ASCII below 0x7f, so prefix+"\x7f" bounds every name that
	// starts with prefix. Names compare byte by byte (COLLATE "C").
	var keys []dlm.Key
	err := v.query(func(r pgx.Rows) error {
		k := dlm.Key{Namespace: ns}
		err := r.Scan(&k.Name)
		keys = append(keys, k)
		return err
	}, `SELECT name AS n FROM leases WHERE ns = $1 AND name > $2
			AND name >= $3 AND name < $4 AND expires_at > $5
		UNION SELECT name FROM waiters w WHERE ns = $1 AND name > $2
			AND name >= $3 AND name < $4 AND deadline > $5 AND `+alive(7)+`
		ORDER BY n LIMIT $6`, ns, after, prefix, prefix+"\x7f", v.now, limit, v.deadAfter())
	if err != nil || len(keys) == 0 {
		return nil, err
	}
	loaded, err := v.loadLocks(keys)
	if err != nil {
		return nil, err
	}
	states := make([]dlm.LockState, len(keys))
	for i, k := range keys {
		states[i] = loaded[k].View(v.now)
	}
	return states, nil
}

// DueLocks implements dlm.ReadTx. Besides expired leases, waiters past
// their deadline and lock-delays that ran out, a lock is due when it has a
// waiter of an instance that is gone.
func (v *view) DueLocks(ctx context.Context, limit int) ([]dlm.Key, error) {
	if err := v.ensureNow(); err != nil {
		return nil, err
	}
	var keys []dlm.Key
	err := v.query(func(r pgx.Rows) error {
		var k dlm.Key
		err := r.Scan(&k.Namespace, &k.Name)
		keys = append(keys, k)
		return err
	}, `SELECT ns, name FROM leases WHERE expires_at <= $1
		UNION SELECT ns, name FROM waiters WHERE deadline <= $1
		UNION SELECT ns, name FROM waiters w WHERE NOT `+alive(3)+`
		UNION SELECT ns, name FROM locks WHERE delay_until <= $1
		LIMIT $2`, v.now, limit, v.deadAfter())
	return keys, err
}

// NextDue implements dlm.ReadTx.
func (v *view) NextDue(ctx context.Context) (time.Time, error) {
	var n *time.Time
	err := v.query(func(r pgx.Rows) error { return r.Scan(&n) },
		`SELECT least((SELECT min(expires_at) FROM leases), (SELECT min(deadline) FROM waiters),
			(SELECT min(delay_until) FROM locks))`)
	if err != nil || n == nil {
		return time.Time{}, err
	}
	return n.UTC(), nil
}

// Stats implements dlm.ReadTx across every instance. Waiters of an
// instance that is gone are not counted: nobody waits on them any more.
func (v *view) Stats(ctx context.Context) (st dlm.Stats, err error) {
	if err := v.ensureNow(); err != nil {
		return st, err
	}
	err = v.query(func(r pgx.Rows) error {
		var waiter bool
		var mode int16
		var n int64
		if err := r.Scan(&waiter, &mode, &n); err != nil {
			return err
		}
		if waiter {
			st.Waiters.Add(dlm.Mode(mode), n)
		} else {
			st.Leases.Add(dlm.Mode(mode), n)
		}
		return nil
	}, `SELECT false, mode, count(*) FROM leases WHERE expires_at > $1 GROUP BY mode
		UNION ALL SELECT true, mode, count(*) FROM waiters w WHERE deadline > $1 AND `+alive(2)+` GROUP BY mode`,
		v.now, v.deadAfter())
	return st, err
}

// Tenants implements dlm.ReadTx.
func (v *view) Tenants(ctx context.Context) ([]dlm.Tenant, error) {
	var ts []dlm.Tenant
	err := v.query(func(r pgx.Rows) error {
		var tn dlm.Tenant
		err := r.Scan(&tn.Name, &tn.CreatedAt)
		tn.CreatedAt = tn.CreatedAt.UTC()
		ts = append(ts, tn)
		return err
	}, `SELECT name, created_at FROM tenants ORDER BY name`)
	return ts, err
}

// Tenant implements dlm.ReadTx.
func (v *view) Tenant(ctx context.Context, name string) (tn dlm.Tenant, ok bool, err error) {
	err = v.query(func(r pgx.Rows) error {
		ok = true
		err := r.Scan(&tn.Name, &tn.CreatedAt)
		tn.CreatedAt = tn.CreatedAt.UTC()
		return err
	}, `SELECT name, created_at FROM tenants WHERE name = $1`, name)
	return tn, ok, err
}

// APIKey implements dlm.ReadTx.
func (v *view) APIKey(ctx context.Context, id string) (k dlm.APIKey, ok bool, err error) {
	err = v.query(func(r pgx.Rows) error {
		ok = true
		err := r.Scan(&k.ID, &k.Tenant, &k.Hash, &k.CreatedAt, &k.Revoked)
		k.CreatedAt = k.CreatedAt.UTC()
		return err
	}, `SELECT id, tenant, hash, created_at, revoked FROM api_keys WHERE id = $1`, id)
	return k, ok, err
}
