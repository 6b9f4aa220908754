package postgres

import (
	"context"
	"slices"
	"time"

	"github.com/dlmhq/dlm"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// batch is one group's transaction, on a connection of its own from Load
// to Commit or Abort: what Load read, kept by row locks until then.
type batch struct {
	s      *Store
	conn   *pgxpool.Conn
	now    time.Time
	locks  map[dlm.Key]*dlm.LockState
	live   map[string]dlm.Lease // the holders of the locks loaded, by ID
	ended  map[string]*dlm.EndedLease
	idem   map[dlm.IdempotencyKey]dlm.Key
	usage  map[string]usageCount
	dead   []dlm.Waiter // waiters of instances that are gone, deleted at commit
	closed bool
}

type usageCount struct{ leases, waiters int64 }

var _ dlm.Batch = (*batch)(nil)

// maxBatches is how many groups an instance has loaded at once: one
// loading while the one before it commits, so that a group's reads overlap
// the WAL flush of the one before (as the committer before this design
// did). More in flight split the same operations into smaller groups, each
// paying the same statements, on a database that is then CPU-bound: with
// 64 clients on one instance (BenchmarkAcquireRelease) 1, 2, 4 and 8 made
// about 4,300, 4,200-5,900, 2,800 and 2,600 cycles/s.
const maxBatches = 2

// MaxBatches implements dlm.ConcurrentBatches. Each batch keeps a pooled
// connection from Load to Commit, and may wait there for row locks that
// other instances hold; at least half the pool is left to Views (watchers,
// reads, the sweeper's scans), the publisher, the heartbeat and the admin
// transactions.
func (s *Store) MaxBatches() int { return max(1, min(maxBatches, int(s.pool.Config().MaxConns)/2)) }

// Load implements dlm.Store in one round trip. In order, each kind of lock
// sorted, so that no two transactions (of this instance or another) wait
// for each other in a cycle: the advisory locks of the idempotency keys,
// under which each lookup sees the leases and waiters that earlier holders
// of the key committed, even on other locks; the inserts of missing locks
// rows; the locks rows of need.Keys and of the locks that need.Leases are
// held on, FOR UPDATE; then, as of after those locks, the holders and
// waiters of those locks, the ended leases of need.Leases, the idempotency
// lookups, the usage of need.Tenants and clock_timestamp() as Now.
//
// A lease of need.Leases is found live only among the holders of the locks
// it locked: one granted by a transaction that committed after the locks
// were taken is not found, as if asked for just before its grant.
func (s *Store) Load(ctx context.Context, need *dlm.Need) (dlm.Batch, error) {
	octx, done, err := s.call(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	conn, err := s.pool.Acquire(octx)
	if err != nil {
		return nil, unavailable(err)
	}
	b := &batch{
		s: s, conn: conn,
		locks: map[dlm.Key]*dlm.LockState{}, live: map[string]dlm.Lease{}, ended: map[string]*dlm.EndedLease{},
		idem: map[dlm.IdempotencyKey]dlm.Key{}, usage: map[string]usageCount{},
	}
	keys := slices.SortedFunc(slices.Values(need.Keys), compareKeys)
	keys = slices.Compact(keys)
	pb := &pgx.Batch{}
	pb.Queue(`BEGIN`)
	if len(need.Idempotency) > 0 {
		ids := make([]int64, len(need.Idempotency))
		for i, k := range need.Idempotency {
			ids[i] = idemLockKey(k, s.schema)
		}
		slices.Sort(ids)
		pb.Queue(`SELECT pg_advisory_xact_lock(k) FROM unnest($1::bigint[]) k`, slices.Compact(ids))
	}
	b.queueLocks(pb, keys, need.Leases)
	if len(need.Leases) > 0 {
		queueQuery(pb, func(r pgx.Rows) error {
			var e dlm.EndedLease
			err := scanEnded(r, &e)
			b.ended[e.ID] = &e
			return err
		}, `SELECT `+leaseCols+`, reason, ended_at FROM ended_leases WHERE id = ANY($1)`, need.Leases)
	}
	if len(need.Idempotency) > 0 {
		queueIdempotent(pb, need.Idempotency, s.opts.DeadAfter, b.idem)
	}
	if len(need.Tenants) > 0 {
		b.queueUsage(pb, need.Tenants)
	}
	// Last, so that it is read after the locks are granted.
	pb.Queue(`SELECT clock_timestamp()`).QueryRow(func(r pgx.Row) error { return r.Scan(&b.now) })
	if f := s.opts.beforeLoad; f != nil {
		f(conn.Conn().PgConn().PID(), keys)
	}
	if err := conn.Conn().SendBatch(octx, pb).Close(); err != nil {
		b.end()
		return nil, unavailable(err)
	}
	b.now = b.now.UTC()
	for _, s := range b.locks {
		for _, l := range s.Holders {
			b.live[l.ID] = l
		}
	}
	return b, nil
}

// idemLockKey is the advisory lock of an idempotency key.
func idemLockKey(k dlm.IdempotencyKey, schema string) int64 {
	return lockKey("idem\x00"+k.Tenant+"\x00"+k.Key, schema)
}

// queueLocks queues the inserts of the missing rows of keys, in key order
// (an insert waits for another transaction's uncommitted insert of the same
// row, so these too are taken in order), and the loading of keys and of the
// locks of leases, locked.
func (b *batch) queueLocks(pb *pgx.Batch, keys []dlm.Key, leases []string) {
	ns, names := keyColumns(keys)
	var (
		keysSQL string
		args    []any
	)
	switch {
	case len(leases) > 0 && len(keys) > 0:
		keysSQL = `SELECT * FROM unnest($1::text[], $2::text[]) UNION SELECT ns, name FROM leases WHERE id = ANY($3::text[])`
		args = []any{ns, names, leases}
	case len(leases) > 0:
		keysSQL = `SELECT ns, name FROM leases WHERE id = ANY($1::text[])`
		args = []any{leases}
	case len(keys) > 0:
		keysSQL = `SELECT * FROM unnest($1::text[], $2::text[])`
		args = []any{ns, names}
	default:
		return
	}
	if len(keys) > 0 {
		pb.Queue(`INSERT INTO locks (ns, name) SELECT * FROM unnest($1::text[], $2::text[]) ON CONFLICT DO NOTHING`, ns, names)
	}
	queueStates(pb, keysSQL, args, true, b.s.opts.DeadAfter, b.locks, func(w dlm.Waiter) {
		// Its request died with its instance. No event: nothing
		// happened to the lock.
		b.dead = append(b.dead, w)
	})
}

// queueUsage queues the reads of the counts of tenants.
func (b *batch) queueUsage(pb *pgx.Batch, tenants []string) {
	queueQuery(pb, func(r pgx.Rows) error {
		var tn string
		var u usageCount
		err := r.Scan(&tn, &u.leases, &u.waiters)
		b.usage[tn] = u
		return err
	}, `SELECT t, (SELECT coalesce(sum(n), 0) FROM lease_usage WHERE tenant = t)::bigint,
		(SELECT coalesce(sum(n), 0) FROM waiter_usage WHERE tenant = t)::bigint
		FROM unnest($1::text[]) t`, tenants)
}

// Now implements dlm.Batch: the database's clock after the locks were
// granted.
func (b *batch) Now() time.Time { return b.now }

// Lock implements dlm.Batch.
func (b *batch) Lock(key dlm.Key) *dlm.LockState { return b.locks[key] }

// Lease implements dlm.Batch.
func (b *batch) Lease(id string) (*dlm.Lease, *dlm.EndedLease) {
	if l, ok := b.live[id]; ok {
		return &l, nil
	}
	return nil, b.ended[id]
}

// Idempotent implements dlm.Batch.
func (b *batch) Idempotent(k dlm.IdempotencyKey) (dlm.Key, bool) {
	key, ok := b.idem[k]
	return key, ok
}

// Usage implements dlm.Batch: the tenant's counter shards as read. Under
// concurrency a tenant may go over a cap by about as many operations as
// run at once: the counts of other transactions in flight are not seen.
func (b *batch) Usage(tenant string) (leases, waiters int64) {
	u := b.usage[tenant]
	return u.leases, u.waiters
}
