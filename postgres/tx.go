package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/dlmhq/dlm"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// tx is one transaction on one pooled connection. It implements dlm.Tx (and
// so dlm.ReadTx).
//
// It pipelines: the transaction begins with its first batch of reads, and
// Save only queues its writes, which go out in front of the next read or of
// COMMIT. A write that fails therefore fails a later call or the commit;
// either way the whole transaction rolls back and Update reports it.
type tx struct {
	s      *Store
	conn   *pgx.Conn
	ctx    context.Context // the call's, for reads that take no ctx (Now)
	write  bool
	begun  bool
	now    time.Time
	err    error  // the first failure: the transaction is over
	queue  []stmt // Save's writes, not sent yet
	saved  bool   // a change was saved: announce it after commit
	events bool   // events were saved: number them after commit
	usage  *usageCount
	// locked is a lock's state that FindLease locked and loaded ahead of
	// the LoadLock that follows it.
	locked *dlm.LockState
	// numberLater is set when the transaction committed events that
	// someone else was numbering: they are numbered in the next round.
	numberLater bool
}

type stmt struct {
	sql  string
	args []any
}

// flushInto adds the queued writes to b.
func (t *tx) flushInto(b *pgx.Batch) {
	for _, q := range t.queue {
		b.Queue(q.sql, q.args...)
	}
	t.queue = t.queue[:0]
}

// usageCount is a tenant's usage as read in this transaction.
type usageCount struct {
	tenant          string
	leases, waiters int64
}

var (
	_ dlm.ReadTx = (*tx)(nil)
	_ dlm.Tx     = (*tx)(nil)
)

// usageShards is how many rows each tenant's counts are spread over. A
// transaction updates the shard of its connection's backend PID, and no two
// live backends share a PID, so concurrent transactions of one tenant collide
// on a counter row (and wait for each other's commit) only when their PIDs
// are equal modulo usageShards. Reading the usage sums at most this many rows.
const usageShards = 64

func (t *tx) shard() int32 { return int32(t.conn.PgConn().PID() % usageShards) }

// send sends, in one round trip, BEGIN if the transaction has not begun, the
// queued writes, the queries build adds, and a read of the clock if it has not
// been read. The clock comes last, so that in a batch that takes a row lock it
// is read after the lock is granted.
func (t *tx) send(ctx context.Context, build func(b *pgx.Batch)) error {
	if t.err != nil {
		return t.err
	}
	b := &pgx.Batch{}
	if !t.begun {
		if t.write {
			b.Queue(`BEGIN`)
		} else {
			b.Queue(`BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY`)
		}
		t.begun = true
	}
	t.flushInto(b)
	if build != nil {
		build(b)
	}
	if t.now.IsZero() {
		b.Queue(`SELECT clock_timestamp()`).QueryRow(func(r pgx.Row) error {
			var now time.Time
			err := r.Scan(&now)
			t.now = now.UTC()
			return err
		})
	}
	if err := t.conn.SendBatch(ctx, b).Close(); err != nil {
		t.err = err
		return err
	}
	return nil
}

// commit sends the queued writes and COMMIT, numbering the saved events
// before it if nobody else is numbering, or else after it (see
// sequencer.go). Once COMMIT has succeeded the Update has: a failure of the
// numbering is left to the next numbering pass.
func (t *tx) commit(ctx context.Context) error {
	if t.err != nil {
		return t.err
	}
	if !t.begun {
		return nil
	}
	b := &pgx.Batch{}
	t.flushInto(b)
	var numbered, left int64
	if t.events {
		t.s.queueNumber(b, false, &numbered, &left)
	}
	committed := false
	b.Queue(`COMMIT`).Exec(func(ct pgconn.CommandTag) error {
		committed = ct.String() == "COMMIT"
		if !committed {
			return errors.New("transaction rolled back: " + ct.String())
		}
		return nil
	})
	err := t.conn.SendBatch(ctx, b).Close()
	if !committed {
		return err
	}
	t.begun = false
	if err != nil {
		t.s.log.Debug("dlm: numbering events failed", "err", err)
	}
	t.numberLater = left > 0
	return nil
}

// rollback ends a failed transaction. If even that fails, the connection is
// left in a transaction and the pool discards it.
func (t *tx) rollback() {
	if !t.begun || t.conn.IsClosed() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, _ = t.conn.Exec(ctx, `ROLLBACK`)
}

// exec runs one statement now.
func (t *tx) exec(ctx context.Context, sql string, args ...any) (tag pgconn.CommandTag, err error) {
	err = t.send(ctx, func(b *pgx.Batch) {
		b.Queue(sql, args...).Exec(func(ct pgconn.CommandTag) error {
			tag = ct
			return nil
		})
	})
	return tag, err
}

// query runs one query now and calls scan for each row.
func (t *tx) query(ctx context.Context, scan func(pgx.Rows) error, sql string, args ...any) error {
	return t.send(ctx, func(b *pgx.Batch) { queueQuery(b, scan, sql, args...) })
}

func queueQuery(b *pgx.Batch, scan func(pgx.Rows) error, sql string, args ...any) {
	b.Queue(sql, args...).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			if err := scan(rows); err != nil {
				return err
			}
		}
		return rows.Err()
	})
}

// later queues a write to go out with the next round trip.
func (t *tx) later(sql string, args ...any) { t.queue = append(t.queue, stmt{sql, args}) }

// Now implements dlm.ReadTx: the database's clock_timestamp(), read once per
// transaction. If nothing has been read yet it costs a round trip; if that
// fails, the transaction fails and Now returns the local time meanwhile.
func (t *tx) Now() time.Time {
	if t.now.IsZero() {
		if err := t.send(t.ctx, nil); err != nil {
			return time.Now()
		}
	}
	return t.now
}

func (t *tx) ensureNow(ctx context.Context) error {
	if t.now.IsZero() {
		return t.send(ctx, nil)
	}
	return t.err
}

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// alive is the condition that waiter w belongs to a live instance. $n is the
// number of seconds after which an instance that has not recorded a heartbeat
// counts as gone. For as long after the server (re)started, nobody counts as
// gone: no instance could record a heartbeat while it was down.
func alive(n int) string {
	return fmt.Sprintf(`(EXISTS (SELECT 1 FROM instances i WHERE i.id = w.instance
			AND i.seen_at > clock_timestamp() - make_interval(secs => $%[1]d))
		OR pg_postmaster_start_time() > clock_timestamp() - make_interval(secs => $%[1]d))`, n)
}

func (t *tx) deadAfter() float64 { return t.s.opts.DeadAfter.Seconds() }

// dropWaiters deletes the waiters w that match cond (with args $1..$n) and
// keeps the waiter counts right.
func (t *tx) dropWaiters(ctx context.Context, cond string, args ...any) error {
	_, err := t.exec(ctx, dropWaitersSQL(cond, len(args)), append(args, t.shard())...)
	return err
}

func dropWaitersSQL(cond string, nargs int) string {
	return fmt.Sprintf(`WITH d AS (DELETE FROM waiters w WHERE %s RETURNING tenant)
		INSERT INTO waiter_usage (tenant, shard, n) SELECT tenant, $%d, -count(*) FROM d GROUP BY tenant
		ON CONFLICT (tenant, shard) DO UPDATE SET n = waiter_usage.n + excluded.n`, cond, nargs+1)
}

const leaseCols = `id, tenant, ns, name, mode, holder, token, ttl, acquired_at, expires_at`

func scanLease(r pgx.Rows, l *dlm.Lease, extra ...any) error {
	var mode int16
	var ttl int64
	err := r.Scan(append([]any{&l.ID, &l.Tenant, &l.Key.Namespace, &l.Key.Name, &mode,
		&l.HolderID, &l.Token, &ttl, &l.AcquiredAt, &l.ExpiresAt}, extra...)...)
	l.Mode, l.TTL = dlm.Mode(mode), time.Duration(ttl)
	l.AcquiredAt, l.ExpiresAt = l.AcquiredAt.UTC(), l.ExpiresAt.UTC()
	return err
}

// queueLoad queues the reads of key's state into s.
func (t *tx) queueLoad(b *pgx.Batch, key dlm.Key, s *dlm.LockState) {
	queueQuery(b, func(r pgx.Rows) error { return r.Scan(&s.Token) },
		`SELECT token FROM locks WHERE ns = $1 AND name = $2`, key.Namespace, key.Name)
	t.queueHoldersAndWaiters(b, key, s)
}

func (t *tx) queueHoldersAndWaiters(b *pgx.Batch, key dlm.Key, s *dlm.LockState) {
	t.queueState(b, `ns = $1 AND name = $2`, []any{key.Namespace, key.Name}, s)
}

// queueState queues the reads of the holders and waiters of the lock that
// where (with args $1..$n) selects.
func (t *tx) queueState(b *pgx.Batch, where string, args []any, s *dlm.LockState) {
	queueQuery(b, func(r pgx.Rows) error {
		var l dlm.Lease
		var idem *string
		err := scanLease(r, &l, &idem)
		if idem != nil {
			l.IdempotencyKey = *idem
		}
		s.Holders = append(s.Holders, l)
		return err
	}, `SELECT `+leaseCols+`, idem FROM leases WHERE `+where+` ORDER BY token`, args...)
	queueQuery(b, func(r pgx.Rows) error {
		w := dlm.Waiter{Key: s.Key}
		var mode int16
		var ttl int64
		var idem *string
		var live bool
		err := r.Scan(&w.ID, &w.Tenant, &w.Seq, &mode, &w.HolderID, &ttl, &idem, &w.Ticket, &w.QueuedAt, &w.Deadline, &live)
		w.Mode, w.TTL = dlm.Mode(mode), time.Duration(ttl)
		w.QueuedAt, w.Deadline = w.QueuedAt.UTC(), w.Deadline.UTC()
		if idem != nil {
			w.IdempotencyKey = *idem
		}
		if live {
			s.Waiters = append(s.Waiters, w)
		} else if t.write {
			t.dropWaiter(w)
		}
		return err
	}, `SELECT id, tenant, seq, mode, holder, ttl, idem, ticket, queued_at, deadline, `+alive(len(args)+1)+`
		FROM waiters w WHERE `+where+` ORDER BY seq`,
		append(args, t.deadAfter())...)
}

// dropWaiter queues the removal of a waiter whose instance is gone: its
// request died with it. No event is recorded: nothing happened to the lock.
func (t *tx) dropWaiter(w dlm.Waiter) {
	t.later(`DELETE FROM waiters WHERE id = $1`, w.ID)
	t.countUsage("waiter_usage", map[string]int64{w.Tenant: -1})
}

// LoadLock implements dlm.ReadTx in one round trip. In a write transaction
// it first makes sure the lock's row exists and locks it FOR UPDATE, and
// reads the state after the lock is granted. Waiters of instances that are
// gone are left out (and, in a write transaction, deleted at commit). It also reads the usage of the lock's tenant, which an
// acquire asks for next.
func (t *tx) LoadLock(ctx context.Context, key dlm.Key) (*dlm.LockState, error) {
	if l := t.locked; l != nil && l.Key == key {
		t.locked = nil
		return l, nil
	}
	s := &dlm.LockState{Key: key}
	err := t.send(ctx, func(b *pgx.Batch) {
		if !t.write {
			t.queueLoad(b, key, s)
			return
		}
		b.Queue(`INSERT INTO locks (ns, name) VALUES ($1, $2) ON CONFLICT DO NOTHING`, key.Namespace, key.Name)
		b.Queue(`SELECT token FROM locks WHERE ns = $1 AND name = $2 FOR UPDATE`, key.Namespace, key.Name).
			QueryRow(func(r pgx.Row) error { return r.Scan(&s.Token) })
		t.queueHoldersAndWaiters(b, key, s)
		if key.Namespace != dlm.GlobalNamespace {
			t.queueUsage(b, key.Namespace)
		}
	})
	if err != nil {
		return nil, err
	}
	return s, nil
}

func (t *tx) queueUsage(b *pgx.Batch, tenant string) {
	u := &usageCount{tenant: tenant}
	b.Queue(`SELECT (SELECT coalesce(sum(n), 0) FROM lease_usage WHERE tenant = $1)::bigint,
		(SELECT coalesce(sum(n), 0) FROM waiter_usage WHERE tenant = $1)::bigint`, tenant).
		QueryRow(func(r pgx.Row) error {
			err := r.Scan(&u.leases, &u.waiters)
			t.usage = u
			return err
		})
}

// FindLease implements dlm.ReadTx. In a write transaction it also locks the
// lease's lock and loads its state in the same round trip, since renew and
// release load that lock next: LoadLock then answers without a round trip.
// The lock's key is passed from statement to statement in transaction-local
// settings (dlm.ns, dlm.name), and the state is read after the lock is
// granted.
func (t *tx) FindLease(ctx context.Context, id string) (live *dlm.Lease, ended *dlm.EndedLease, err error) {
	var (
		spec   = &dlm.LockState{}
		locked bool
	)
	err = t.send(ctx, func(b *pgx.Batch) {
		queueQuery(b, func(r pgx.Rows) error {
			var l dlm.Lease
			var idem *string
			err := scanLease(r, &l, &idem)
			if idem != nil {
				l.IdempotencyKey = *idem
			}
			live = &l
			return err
		}, `SELECT `+leaseCols+`, idem FROM leases WHERE id = $1`, id)
		queueQuery(b, func(r pgx.Rows) error {
			var e dlm.EndedLease
			var reason int16
			err := scanLease(r, &e.Lease, &reason, &e.EndedAt)
			e.Reason, e.EndedAt = dlm.EndReason(reason), e.EndedAt.UTC()
			ended = &e
			return err
		}, `SELECT `+leaseCols+`, reason, ended_at FROM ended_leases WHERE id = $1`, id)
		if !t.write {
			return
		}
		queueQuery(b, func(r pgx.Rows) error {
			locked = true
			return r.Scan(&spec.Key.Namespace, &spec.Key.Name, &spec.Token, nil, nil)
		}, `SELECT ns, name, token, set_config('dlm.ns', ns, true), set_config('dlm.name', name, true)
			FROM locks WHERE (ns, name) = (SELECT ns, name FROM leases WHERE id = $1) FOR UPDATE`, id)
		const where = `ns = current_setting('dlm.ns', true) AND name = current_setting('dlm.name', true)`
		t.queueState(b, where, nil, spec)
	})
	if err != nil {
		return nil, nil, err
	}
	if locked {
		for i := range spec.Waiters {
			spec.Waiters[i].Key = spec.Key
		}
		t.locked = spec
	}
	if live != nil {
		return live, nil, nil
	}
	return nil, ended, nil
}

// FindIdempotent implements dlm.ReadTx. In a write transaction it first
// takes a transaction-scoped advisory lock on the key, so that requests with
// one key take turns even when they are for different locks on different
// instances: the second finds the first's lease or waiter and is refused.
func (t *tx) FindIdempotent(ctx context.Context, tenant, idem string) (key dlm.Key, ok bool, err error) {
	err = t.send(ctx, func(b *pgx.Batch) {
		if t.write {
			b.Queue(`SELECT pg_advisory_xact_lock($1)`, lockKey("idem\x00"+tenant+"\x00"+idem, t.s.schema))
		}
		// Its snapshot is taken after the lock is granted.
		queueQuery(b, func(r pgx.Rows) error {
			ok = true
			return r.Scan(&key.Namespace, &key.Name)
		}, `SELECT ns, name FROM leases WHERE tenant = $1 AND idem = $2
			UNION ALL SELECT ns, name FROM waiters w WHERE tenant = $1 AND idem = $2 AND `+alive(3)+` LIMIT 1`,
			tenant, idem, t.deadAfter())
	})
	return key, ok, err
}

func (t *tx) ListLocks(ctx context.Context, ns, prefix, after string, limit int) ([]dlm.LockState, error) {
	if err := t.ensureNow(ctx); err != nil {
		return nil, err
	}
	// Names are ASCII below 0x7f, so prefix+"\x7f" bounds every name that
	// starts with prefix. Names compare byte by byte (COLLATE "C").
	var names []string
	err := t.query(ctx, func(r pgx.Rows) error {
		var n string
		err := r.Scan(&n)
		names = append(names, n)
		return err
	}, `SELECT name AS n FROM leases WHERE ns = $1 AND name > $2
			AND name >= $3 AND name < $4 AND expires_at > $5
		UNION SELECT name FROM waiters w WHERE ns = $1 AND name > $2
			AND name >= $3 AND name < $4 AND deadline > $5 AND `+alive(7)+`
		ORDER BY n LIMIT $6`, ns, after, prefix, prefix+"\x7f", t.now, limit, t.deadAfter())
	if err != nil {
		return nil, err
	}
	states := make([]dlm.LockState, len(names))
	err = t.send(ctx, func(b *pgx.Batch) {
		for i, n := range names {
			states[i].Key = dlm.Key{Namespace: ns, Name: n}
			t.queueLoad(b, states[i].Key, &states[i])
		}
	})
	if err != nil {
		return nil, err
	}
	for i := range states {
		states[i] = states[i].View(t.now)
	}
	return states, nil
}

// DueLocks implements dlm.ReadTx. Besides expired leases and waiters past
// their deadline, a lock is due when it has a waiter of an instance that is
// gone. In a write transaction it locks the locks it returns and skips those
// that another transaction has locked (FOR UPDATE SKIP LOCKED), so that
// instances sweeping at once share the work instead of repeating it.
func (t *tx) DueLocks(ctx context.Context, limit int) ([]dlm.Key, error) {
	if err := t.ensureNow(ctx); err != nil {
		return nil, err
	}
	lock := ""
	if t.write {
		lock = ` FOR UPDATE SKIP LOCKED`
	}
	var keys []dlm.Key
	err := t.query(ctx, func(r pgx.Rows) error {
		var k dlm.Key
		err := r.Scan(&k.Namespace, &k.Name)
		keys = append(keys, k)
		return err
	}, `SELECT ns, name FROM locks WHERE (ns, name) IN (
			SELECT ns, name FROM leases WHERE expires_at <= $1
			UNION SELECT ns, name FROM waiters WHERE deadline <= $1
			UNION SELECT ns, name FROM waiters w WHERE NOT `+alive(3)+`)
		LIMIT $2`+lock, t.now, limit, t.deadAfter())
	return keys, err
}

func (t *tx) NextDue(ctx context.Context) (next time.Time, err error) {
	var n *time.Time
	err = t.query(ctx, func(r pgx.Rows) error { return r.Scan(&n) },
		`SELECT least((SELECT min(expires_at) FROM leases), (SELECT min(deadline) FROM waiters))`)
	if err != nil || n == nil {
		return time.Time{}, err
	}
	return n.UTC(), nil
}

// Stats implements dlm.ReadTx across every instance. Waiters of an
// instance that is gone are not counted: nobody waits on them any more.
func (t *tx) Stats(ctx context.Context) (st dlm.Stats, err error) {
	if err := t.ensureNow(ctx); err != nil {
		return st, err
	}
	err = t.query(ctx, func(r pgx.Rows) error {
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
		t.now, t.deadAfter())
	return st, err
}

func (t *tx) Tenants(ctx context.Context) ([]dlm.Tenant, error) {
	var ts []dlm.Tenant
	err := t.query(ctx, func(r pgx.Rows) error {
		var tn dlm.Tenant
		err := r.Scan(&tn.Name, &tn.CreatedAt)
		tn.CreatedAt = tn.CreatedAt.UTC()
		ts = append(ts, tn)
		return err
	}, `SELECT name, created_at FROM tenants ORDER BY name`)
	return ts, err
}

func (t *tx) Tenant(ctx context.Context, name string) (tn dlm.Tenant, ok bool, err error) {
	err = t.query(ctx, func(r pgx.Rows) error {
		ok = true
		err := r.Scan(&tn.Name, &tn.CreatedAt)
		tn.CreatedAt = tn.CreatedAt.UTC()
		return err
	}, `SELECT name, created_at FROM tenants WHERE name = $1`, name)
	return tn, ok, err
}

// APIKey implements dlm.ReadTx. In a write transaction it first takes a
// transaction-scoped advisory lock, so that writers who look for a key before
// they create it (bootstrap, when several instances start at once) take
// turns: the second finds what the first created.
func (t *tx) APIKey(ctx context.Context, id string) (k dlm.APIKey, ok bool, err error) {
	if t.write {
		if _, err := t.exec(ctx, `SELECT pg_advisory_xact_lock($1)`, lockKey("keys", t.s.schema)); err != nil {
			return k, false, err
		}
	}
	err = t.query(ctx, func(r pgx.Rows) error {
		ok = true
		err := r.Scan(&k.ID, &k.Tenant, &k.Hash, &k.CreatedAt, &k.Revoked)
		k.CreatedAt = k.CreatedAt.UTC()
		return err
	}, `SELECT id, tenant, hash, created_at, revoked FROM api_keys WHERE id = $1`, id)
	return k, ok, err
}

// Usage implements dlm.Tx by summing the tenant's counter shards, or from
// what LoadLock read along with the lock. Under concurrency a tenant may go
// over a cap by about as many operations as run at once: the counts of
// transactions still in flight are not seen.
func (t *tx) Usage(ctx context.Context, tenant string) (leases, waiters int64, err error) {
	if t.usage == nil || t.usage.tenant != tenant || len(t.queue) > 0 {
		if err := t.send(ctx, func(b *pgx.Batch) { t.queueUsage(b, tenant) }); err != nil {
			return 0, 0, err
		}
	}
	return t.usage.leases, t.usage.waiters, nil
}

// Save implements dlm.Tx. It only queues the writes; they are sent with the
// next round trip, at the latest with COMMIT. Event IDs are left 0: events
// are numbered right after commit (see sequencer.go).
func (t *tx) Save(ctx context.Context, s *dlm.LockState, c *dlm.Change) error {
	if t.err != nil {
		return t.err
	}
	k := s.Key
	leases, waiters := map[string]int64{}, map[string]int64{}
	if len(c.Granted) > 0 {
		t.later(`UPDATE locks SET token = $3 WHERE ns = $1 AND name = $2`, k.Namespace, k.Name, s.Token)
	}
	// A lease that expiry granted in the past may have ended again in the
	// same change: write it before ending it.
	for _, l := range c.Granted {
		t.later(`INSERT INTO leases (`+leaseCols+`, idem) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
			l.ID, l.Tenant, k.Namespace, k.Name, int16(l.Mode), l.HolderID, l.Token, int64(l.TTL),
			l.AcquiredAt, l.ExpiresAt, nullable(l.IdempotencyKey))
		leases[l.Tenant]++
	}
	for _, l := range c.Renewed {
		t.later(`UPDATE leases SET ttl = $2, expires_at = $3 WHERE id = $1`, l.ID, int64(l.TTL), l.ExpiresAt)
	}
	for _, e := range c.Ended {
		t.later(`DELETE FROM leases WHERE id = $1`, e.ID)
		t.later(`INSERT INTO ended_leases (`+leaseCols+`, reason, ended_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`,
			e.ID, e.Tenant, k.Namespace, k.Name, int16(e.Mode), e.HolderID, e.Token, int64(e.TTL),
			e.AcquiredAt, e.ExpiresAt, int16(e.Reason), e.EndedAt)
		leases[e.Tenant]--
	}
	for _, w := range c.Dequeued {
		t.later(`DELETE FROM waiters WHERE id = $1`, w.ID)
		waiters[w.Tenant]--
	}
	for _, w := range c.Queued {
		t.later(`INSERT INTO waiters (id, tenant, ns, name, seq, mode, holder, ttl, idem, ticket, queued_at, deadline, instance)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)`,
			w.ID, w.Tenant, k.Namespace, k.Name, w.Seq, int16(w.Mode), w.HolderID, int64(w.TTL),
			nullable(w.IdempotencyKey), w.Ticket, w.QueuedAt, w.Deadline, t.s.instance)
		waiters[w.Tenant]++
	}
	for _, w := range c.Retaken {
		// The retry waits here now: the entry lives as long as this instance.
		t.later(`UPDATE waiters SET ticket = $2, deadline = $3, instance = $4 WHERE id = $1`,
			w.ID, w.Ticket, w.Deadline, t.s.instance)
	}
	for i := range c.Events {
		e := &c.Events[i]
		ret := ``
		if i == len(c.Events)-1 {
			// The session remembers the last event this transaction
			// wrote, so that it can tell when its events are numbered.
			ret = ` RETURNING set_config('dlm.last_seq', seq::text, false)`
		}
		t.later(`INSERT INTO events (type, ns, name, holder, mode, token, at) VALUES ($1, $2, $3, $4, $5, $6, $7)`+ret,
			int16(e.Type), e.Key.Namespace, e.Key.Name, e.HolderID, int16(e.Mode), e.Token, e.At)
	}
	t.countUsage("lease_usage", leases)
	t.countUsage("waiter_usage", waiters)
	t.usage = nil
	t.saved = true
	t.events = t.events || len(c.Events) > 0
	return nil
}

// countUsage queues the counter updates, tenants in order so that two
// transactions never wait for each other's counters in opposite orders.
func (t *tx) countUsage(table string, delta map[string]int64) {
	tenants := make([]string, 0, len(delta))
	for tn, d := range delta {
		if d != 0 {
			tenants = append(tenants, tn)
		}
	}
	slices.Sort(tenants)
	for _, tn := range tenants {
		t.later(`INSERT INTO `+table+` (tenant, shard, n) VALUES ($1, $2, $3)
			ON CONFLICT (tenant, shard) DO UPDATE SET n = `+table+`.n + excluded.n`, tn, t.shard(), delta[tn])
	}
}

func (t *tx) CreateTenant(ctx context.Context, tn dlm.Tenant) error {
	_, err := t.exec(ctx, `INSERT INTO tenants (name, created_at) VALUES ($1, $2)`, tn.Name, tn.CreatedAt)
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "23505" { // unique_violation
		return dlm.Invalid("name", "tenant %q exists", tn.Name)
	}
	return err
}

func (t *tx) PutAPIKey(ctx context.Context, k dlm.APIKey) error {
	_, err := t.exec(ctx, `INSERT INTO api_keys (id, tenant, hash, created_at) VALUES ($1, $2, $3, $4)`,
		k.ID, k.Tenant, k.Hash, k.CreatedAt)
	return err
}

func (t *tx) RevokeAPIKey(ctx context.Context, tenant, id string) (bool, error) {
	tag, err := t.exec(ctx, `UPDATE api_keys SET revoked = true WHERE tenant = $1 AND id = $2`, tenant, id)
	return tag.RowsAffected() > 0, err
}

func (t *tx) PruneEnded(ctx context.Context, before time.Time) error {
	_, err := t.exec(ctx, `DELETE FROM ended_leases WHERE ended_at < $1`, before)
	return err
}
