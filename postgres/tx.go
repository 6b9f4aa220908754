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
	"github.com/jackc/pgx/v5/pgxpool"
)

// tx is one fn's view of a batch: it implements dlm.Tx (and so dlm.ReadTx).
// Its saves join the batch's writes only when the fn succeeds.
type tx struct {
	b   *batch
	ctx context.Context // the call's, bounded by OpTimeout
	now time.Time
	err error // set when the fn can go on neither in its group nor alone
	// A fn that cannot go on in its group moves to a transaction of its
	// own on conn, which Update commits.
	moved   bool
	conn    *pgxpool.Conn
	owned   []dlm.Key // locks this fn is using
	waiting *held     // the lock of the group it waits for
	idems   []idemAnswer
	states  map[dlm.Key]*dlm.LockState
	saves   []save
}

type save struct {
	key   dlm.Key
	token int64
	c     dlm.Change
}

// idemAnswer is what FindIdempotent told the fn in its group.
type idemAnswer struct {
	tenant, idem string
	key          dlm.Key
	ok           bool
}

var (
	_ dlm.ReadTx = (*tx)(nil)
	_ dlm.Tx     = (*tx)(nil)
)

// usageShards is how many rows each tenant's counts are spread over. A
// transaction updates a shard drawn at random, so two concurrent
// transactions of one tenant collide on a counter row (and one waits for
// the other's commit) once in usageShards, whichever instances and
// connections they run on. (A shard fixed per connection made some pairs of
// connections collide on every commit for as long as they lived.) Reading
// the usage sums at most this many rows.
const usageShards = 64

func (b *batch) newTx(ctx context.Context) *tx {
	return &tx{b: b, ctx: ctx, states: map[dlm.Key]*dlm.LockState{}}
}

// finish ends the fn in its batch: if it succeeded its saves join the
// batch's writes. The locks it used are free for the next fn of a group.
func (t *tx) finish(err error) {
	b := t.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if err == nil {
		for _, sv := range t.saves {
			b.w.apply(sv.key, sv.token, &sv.c)
		}
		for k, s := range t.states {
			b.locks[k].state = s
		}
	}
	for _, k := range t.owned {
		b.free(b.locks[k])
	}
	t.owned = nil
	if b.group {
		b.idle()
	}
}

// free hands h to the fns waiting for it. b.mu is held.
func (b *batch) free(h *held) {
	h.owner = nil
	for _, c := range h.next {
		close(c)
		b.running++
	}
	h.next = nil
}

// errStuck fails a fn of a group that holds locks of the group and needs one
// it cannot wait for there: it cannot move (see moveOut). The fns of the
// engine take one lock each, or (the sweeper) only locks its group has.
var errStuck = dlm.Errorf(dlm.CodeUnavailable, "storage: lock order conflict in a group commit; retry")

// moveOut takes the fn out of its group into a transaction of its own, where
// it goes on. It is called when the fn has only read (it uses no lock of the
// group), so the move is like the next statement of a READ COMMITTED
// transaction seeing a newer snapshot. The idempotency keys the fn looked up
// are locked again, and looked up again: if an answer changed meanwhile the
// fn fails with unavailable, and a retry sees the new answer.
func (t *tx) moveOut() error {
	if len(t.owned) > 0 {
		t.err = errStuck
		return t.err
	}
	g := t.b
	t.finish(errMoved)
	t.moved = true
	conn, err := g.s.pool.Acquire(t.ctx)
	if err != nil {
		t.err = unavailable(err)
		return t.err
	}
	t.conn = conn
	t.b = newBatch(t.ctx, g.s, conn.Conn(), true, false)
	for _, a := range t.idems {
		key, ok, _, err := t.b.findIdempotent(t, a.tenant, a.idem)
		if err == nil && (key != a.key || ok != a.ok) {
			err = dlm.Errorf(dlm.CodeUnavailable, "storage: idempotency key %q was used concurrently; retry", a.idem)
		}
		if err != nil {
			t.err = err
			return err
		}
	}
	return nil
}

var errMoved = errors.New("moved out of the group")

// read sends a and waits for its answers.
func (t *tx) read(a *ask) error {
	if t.err != nil {
		return t.err
	}
	t.b.mu.Lock()
	defer t.b.mu.Unlock()
	return t.b.await(a)
}

// query runs one query and calls scan for each row.
func (t *tx) query(scan func(pgx.Rows) error, sql string, args ...any) error {
	return t.read(&ask{build: func(pb *pgx.Batch) { queueQuery(pb, scan, sql, args...) }})
}

func queueQuery(pb *pgx.Batch, scan func(pgx.Rows) error, sql string, args ...any) {
	pb.Queue(sql, args...).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			if err := scan(rows); err != nil {
				return err
			}
		}
		return rows.Err()
	})
}

// exec runs a statement that writes directly. A group cannot undo it for
// one fn alone, so there the fn moves to a transaction of its own first.
func (t *tx) exec(sql string, args ...any) (tag pgconn.CommandTag, err error) {
	if t.err == nil && t.b.group {
		if err := t.moveOut(); err != nil {
			return tag, err
		}
	}
	err = t.read(&ask{build: func(pb *pgx.Batch) {
		pb.Queue(sql, args...).Exec(func(ct pgconn.CommandTag) error {
			tag = ct
			return nil
		})
	}})
	return tag, err
}

// Now implements dlm.ReadTx: the database's clock_timestamp() as read after
// the locks of the latest round, fixed for the fn at its first call. Fns of
// a group that use one lock after another thus see times that only grow. If
// nothing has been read yet it costs a round trip; if that fails, the
// transaction fails and Now returns the local time meanwhile.
func (t *tx) Now() time.Time {
	if err := t.ensureNow(); err != nil {
		return time.Now()
	}
	return t.now
}

func (t *tx) ensureNow() error {
	if !t.now.IsZero() {
		return nil
	}
	if t.err != nil {
		return t.err
	}
	b := t.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.now.IsZero() {
		if err := b.await(&ask{}); err != nil {
			return err
		}
	}
	t.now = b.now
	return nil
}

func nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
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

func (t *tx) deadAfter() float64 { return t.b.s.opts.DeadAfter.Seconds() }

// dropWaiters deletes the waiters w that match cond (with args $1..$n) and
// keeps the waiter counts right.
func (t *tx) dropWaiters(cond string, args ...any) error {
	_, err := t.exec(fmt.Sprintf(`WITH d AS (DELETE FROM waiters w WHERE %s RETURNING tenant)
		INSERT INTO waiter_usage (tenant, shard, n) SELECT tenant, $%d, -count(*) FROM d GROUP BY tenant
		ON CONFLICT (tenant, shard) DO UPDATE SET n = waiter_usage.n + excluded.n`, cond, len(args)+1),
		append(args, t.b.shard)...)
	return err
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

// holderCols are the columns of a live lease, which scanHolder reads.
const holderCols = leaseCols + `, idem, requested_ttl`

// scanHolder scans holderCols. A lease written before requested_ttl existed
// has it NULL: its TTL then stands in for it.
func scanHolder(r pgx.Rows, l *dlm.Lease) error {
	var idem *string
	var requested *int64
	err := scanLease(r, l, &idem, &requested)
	if idem != nil {
		l.IdempotencyKey = *idem
	}
	l.RequestedTTL = l.TTL
	if requested != nil {
		l.RequestedTTL = time.Duration(*requested)
	}
	return err
}

// LoadLock implements dlm.ReadTx. In a write transaction the lock's row is
// created if missing and locked FOR UPDATE, and the state read after the
// lock is granted; the usage of the lock's tenant, which an acquire asks for
// next, is read along. Waiters of instances that are gone are left out
// (and, writing, deleted at commit).
//
// In a group, a lock that another fn of the group is using is handed over
// when that fn finishes, with what it saved. A fn whose lock another
// transaction holds moves to a transaction of its own, where it waits.
func (t *tx) LoadLock(ctx context.Context, key dlm.Key) (*dlm.LockState, error) {
	if t.err != nil {
		return nil, t.err
	}
	if s := t.states[key]; s != nil {
		return cloneState(s), nil
	}
	s, move, err := t.b.loadLock(t, key)
	if move {
		if err := t.moveOut(); err != nil {
			return nil, err
		}
		s, _, err = t.b.loadLock(t, key)
	}
	return s, err
}

// loadLock loads key for t, or says that t must move out of its group.
//
// Once a round has failed the transaction is over, and nothing it holds is
// handed out: a lock whose loading round failed has no state, and the fns
// that waited in the group to use it next fail with the round's error.
func (b *batch) loadLock(t *tx, key dlm.Key) (s *dlm.LockState, move bool, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for {
		if b.err != nil {
			return nil, false, b.err
		}
		h := b.locks[key]
		switch {
		case h == nil:
			h = &held{owner: t}
			b.locks[key] = h
			t.owned = append(t.owned, key)
			a := &ask{keys: []dlm.Key{key}}
			if b.write && key.Namespace != dlm.GlobalNamespace && b.usage[key.Namespace] == nil {
				a.tenants = []string{key.Namespace}
			}
			if err := b.await(a); err != nil {
				return nil, false, err
			}
			if h.busy {
				t.owned = t.owned[:len(t.owned)-1]
				b.free(h)
			}
			continue
		case h.busy && len(t.owned) == 0:
			return nil, true, nil
		case h.busy:
			return nil, false, errStuck
		case h.owner == nil:
			h.owner = t
			t.owned = append(t.owned, key)
			fallthrough
		case h.owner == t:
			return cloneState(h.state), false, nil
		case len(t.owned) > 0 && b.waitsFor(h, t):
			return nil, false, errStuck
		}
		c := make(chan struct{})
		h.next = append(h.next, c)
		t.waiting = h
		b.idle()
		b.mu.Unlock()
		<-c
		b.mu.Lock()
		t.waiting = nil
	}
}

// waitsFor reports whether the user of h waits, directly or through others,
// for a lock that t uses: t waiting for h would close a cycle.
func (b *batch) waitsFor(h *held, t *tx) bool {
	for o := h.owner; o != nil; o = o.waiting.owner {
		if o == t {
			return true
		}
		if o.waiting == nil {
			return false
		}
	}
	return false
}

func cloneState(s *dlm.LockState) *dlm.LockState {
	c := *s
	c.Holders = slices.Clone(s.Holders)
	c.Waiters = slices.Clone(s.Waiters)
	return &c
}

// FindLease implements dlm.ReadTx. What this transaction saved comes first.
// In a write transaction it also locks the lease's lock and loads its state
// in the same round trip, since renew and release load that lock next. An
// ended lease costs a second round trip.
func (t *tx) FindLease(ctx context.Context, id string) (*dlm.Lease, *dlm.EndedLease, error) {
	if t.err != nil {
		return nil, nil, t.err
	}
	for i := len(t.saves) - 1; i >= 0; i-- {
		if l, e, ok := leaseIn(&t.saves[i].c, id); ok {
			return l, e, nil
		}
	}
	b := t.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if lw := b.w.leases[id]; lw != nil {
		if lw.ended != nil {
			return nil, lw.ended, nil
		}
		l := lw.live
		return &l, nil, nil
	}
	if b.found[id] == nil {
		if err := b.await(&ask{ids: []string{id}}); err != nil {
			return nil, nil, err
		}
	}
	f := b.found[id]
	if f.live != nil {
		return f.live, nil, nil
	}
	if !f.endedRead {
		if err := b.await(&ask{ended: []string{id}}); err != nil {
			return nil, nil, err
		}
	}
	return nil, f.ended, nil
}

// leaseIn finds what c did to lease id.
func leaseIn(c *dlm.Change, id string) (*dlm.Lease, *dlm.EndedLease, bool) {
	for i := range c.Ended {
		if c.Ended[i].ID == id {
			return nil, &c.Ended[i], true
		}
	}
	for _, ls := range [][]dlm.Lease{c.Renewed, c.Granted} {
		for i := range ls {
			if ls[i].ID == id {
				return &ls[i], nil, true
			}
		}
	}
	return nil, nil, false
}

// FindIdempotent implements dlm.ReadTx. In a write transaction it first
// takes a transaction-scoped advisory lock on the key, so that requests with
// one key take turns even when they are for different locks on different
// instances: the second finds the first's lease or waiter and is refused. A
// group only tries the lock, and lets one fn of its own use each key: any
// other moves to a transaction of its own, where it waits its turn.
func (t *tx) FindIdempotent(ctx context.Context, tenant, idem string) (key dlm.Key, ok bool, err error) {
	if t.err != nil {
		return key, false, t.err
	}
	key, ok, move, err := t.b.findIdempotent(t, tenant, idem)
	if move {
		if err := t.moveOut(); err != nil {
			return key, false, err
		}
		key, ok, _, err = t.b.findIdempotent(t, tenant, idem)
	}
	if err == nil && t.b.group {
		t.idems = append(t.idems, idemAnswer{tenant, idem, key, ok})
	}
	return key, ok, err
}

func (b *batch) findIdempotent(t *tx, tenant, idem string) (key dlm.Key, ok, move bool, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	lock := `SELECT pg_advisory_xact_lock($1)`
	if b.write && b.group {
		ik := [2]string{tenant, idem}
		if o := b.idem[ik]; o != nil && o != t {
			return key, false, true, nil
		}
		b.idem[ik] = t
		lock = `SELECT pg_try_advisory_xact_lock($1)`
	}
	locked := true
	err = b.await(&ask{build: func(pb *pgx.Batch) {
		if b.write {
			pb.Queue(lock, lockKey("idem\x00"+tenant+"\x00"+idem, b.s.schema)).QueryRow(func(r pgx.Row) error {
				if b.group {
					return r.Scan(&locked)
				}
				return nil
			})
		}
		// Its snapshot is taken after the lock is granted.
		queueQuery(pb, func(r pgx.Rows) error {
			ok = true
			return r.Scan(&key.Namespace, &key.Name)
		}, `SELECT ns, name FROM leases WHERE tenant = $1 AND idem = $2
			UNION ALL SELECT ns, name FROM waiters w WHERE tenant = $1 AND idem = $2 AND `+alive(3)+` LIMIT 1`,
			tenant, idem, b.s.opts.DeadAfter.Seconds())
	}})
	if err == nil && !locked {
		delete(b.idem, [2]string{tenant, idem})
		return dlm.Key{}, false, true, nil
	}
	return key, ok, false, err
}

// ListLocks implements dlm.ReadTx. It loads the locks as LoadLock does (in
// a write transaction it locks them).
func (t *tx) ListLocks(ctx context.Context, ns, prefix, after string, limit int) ([]dlm.LockState, error) {
	if err := t.ensureNow(); err != nil {
		return nil, err
	}
	// Names are ASCII below 0x7f, so prefix+"\x7f" bounds every name that
	// starts with prefix. Names compare byte by byte (COLLATE "C").
	var keys []dlm.Key
	err := t.query(func(r pgx.Rows) error {
		k := dlm.Key{Namespace: ns}
		err := r.Scan(&k.Name)
		keys = append(keys, k)
		return err
	}, `SELECT name AS n FROM leases WHERE ns = $1 AND name > $2
			AND name >= $3 AND name < $4 AND expires_at > $5
		UNION SELECT name FROM waiters w WHERE ns = $1 AND name > $2
			AND name >= $3 AND name < $4 AND deadline > $5 AND `+alive(7)+`
		ORDER BY n LIMIT $6`, ns, after, prefix, prefix+"\x7f", t.now, limit, t.deadAfter())
	if err != nil {
		return nil, err
	}
	if err := t.preload(keys); err != nil {
		return nil, err
	}
	states := make([]dlm.LockState, len(keys))
	for i, k := range keys {
		s, err := t.LoadLock(ctx, k)
		if err != nil {
			return nil, err
		}
		states[i] = s.View(t.now)
	}
	return states, nil
}

// DueLocks implements dlm.ReadTx. Besides expired leases and waiters past
// their deadline, a lock is due when it has a waiter of an instance that is
// gone. In a write transaction it locks the locks it returns and skips those
// that another transaction has locked (FOR UPDATE SKIP LOCKED), so that
// instances sweeping at once share the work instead of repeating it.
func (t *tx) DueLocks(ctx context.Context, limit int) ([]dlm.Key, error) {
	if err := t.ensureNow(); err != nil {
		return nil, err
	}
	lock := ""
	if t.b.write {
		lock = ` FOR UPDATE SKIP LOCKED`
	}
	var keys []dlm.Key
	err := t.query(func(r pgx.Rows) error {
		var k dlm.Key
		err := r.Scan(&k.Namespace, &k.Name)
		keys = append(keys, k)
		return err
	}, `SELECT ns, name FROM locks WHERE (ns, name) IN (
			SELECT ns, name FROM leases WHERE expires_at <= $1
			UNION SELECT ns, name FROM waiters WHERE deadline <= $1
			UNION SELECT ns, name FROM waiters w WHERE NOT `+alive(3)+`)
		LIMIT $2`+lock, t.now, limit, t.deadAfter())
	if err != nil {
		return nil, err
	}
	// The sweeper loads each of them next.
	return keys, t.preload(keys)
}

// preload loads the states of keys that are not loaded yet, in one round,
// for the LoadLock calls that follow.
func (t *tx) preload(keys []dlm.Key) error {
	if t.err != nil {
		return t.err
	}
	b := t.b
	b.mu.Lock()
	defer b.mu.Unlock()
	var missing []dlm.Key
	for _, k := range keys {
		if b.locks[k] == nil {
			missing = append(missing, k)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	return b.await(&ask{keys: missing})
}

func (t *tx) NextDue(ctx context.Context) (next time.Time, err error) {
	var n *time.Time
	err = t.query(func(r pgx.Rows) error { return r.Scan(&n) },
		`SELECT least((SELECT min(expires_at) FROM leases), (SELECT min(deadline) FROM waiters))`)
	if err != nil || n == nil {
		return time.Time{}, err
	}
	return n.UTC(), nil
}

// Stats implements dlm.ReadTx across every instance. Waiters of an
// instance that is gone are not counted: nobody waits on them any more.
func (t *tx) Stats(ctx context.Context) (st dlm.Stats, err error) {
	if err := t.ensureNow(); err != nil {
		return st, err
	}
	err = t.query(func(r pgx.Rows) error {
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
	err := t.query(func(r pgx.Rows) error {
		var tn dlm.Tenant
		err := r.Scan(&tn.Name, &tn.CreatedAt)
		tn.CreatedAt = tn.CreatedAt.UTC()
		ts = append(ts, tn)
		return err
	}, `SELECT name, created_at FROM tenants ORDER BY name`)
	return ts, err
}

func (t *tx) Tenant(ctx context.Context, name string) (tn dlm.Tenant, ok bool, err error) {
	err = t.query(func(r pgx.Rows) error {
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
	if t.b.write {
		if _, err := t.exec(`SELECT pg_advisory_xact_lock($1)`, lockKey("keys", t.b.s.schema)); err != nil {
			return k, false, err
		}
	}
	err = t.query(func(r pgx.Rows) error {
		ok = true
		err := r.Scan(&k.ID, &k.Tenant, &k.Hash, &k.CreatedAt, &k.Revoked)
		k.CreatedAt = k.CreatedAt.UTC()
		return err
	}, `SELECT id, tenant, hash, created_at, revoked FROM api_keys WHERE id = $1`, id)
	return k, ok, err
}

// Usage implements dlm.Tx: the tenant's counter shards as read (along with
// its locks, usually), plus what this transaction saved. Under concurrency
// a tenant may go over a cap by about as many operations as run at once: the
// counts of other transactions still in flight are not seen.
func (t *tx) Usage(ctx context.Context, tenant string) (leases, waiters int64, err error) {
	if t.err != nil {
		return 0, 0, t.err
	}
	b := t.b
	b.mu.Lock()
	defer b.mu.Unlock()
	u := b.usage[tenant]
	if u == nil {
		if err := b.await(&ask{tenants: []string{tenant}}); err != nil {
			return 0, 0, err
		}
		u = b.usage[tenant]
	}
	leases, waiters = u.leases+b.w.leaseUsage[tenant], u.waiters+b.w.waiterUsage[tenant]
	for _, sv := range t.saves {
		c := &sv.c
		for _, l := range c.Granted {
			if l.Tenant == tenant {
				leases++
			}
		}
		for _, e := range c.Ended {
			if e.Tenant == tenant {
				leases--
			}
		}
		for _, w := range c.Queued {
			if w.Tenant == tenant {
				waiters++
			}
		}
		for _, w := range c.Dequeued {
			if w.Tenant == tenant {
				waiters--
			}
		}
	}
	return leases, waiters, nil
}

// Save implements dlm.Tx. It only records c; the writes travel with COMMIT.
// Event IDs are left 0: events take theirs at commit (see events.go).
func (t *tx) Save(ctx context.Context, s *dlm.LockState, c *dlm.Change) error {
	if t.err != nil {
		return t.err
	}
	t.states[s.Key] = cloneState(s)
	t.saves = append(t.saves, save{key: s.Key, token: s.Token, c: *c})
	return nil
}

func (t *tx) CreateTenant(ctx context.Context, tn dlm.Tenant) error {
	_, err := t.exec(`INSERT INTO tenants (name, created_at) VALUES ($1, $2)`, tn.Name, tn.CreatedAt)
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "23505" { // unique_violation
		return dlm.Invalid("name", "tenant %q exists", tn.Name)
	}
	return err
}

func (t *tx) PutAPIKey(ctx context.Context, k dlm.APIKey) error {
	_, err := t.exec(`INSERT INTO api_keys (id, tenant, hash, created_at) VALUES ($1, $2, $3, $4)`,
		k.ID, k.Tenant, k.Hash, k.CreatedAt)
	return err
}

func (t *tx) RevokeAPIKey(ctx context.Context, tenant, id string) (bool, error) {
	tag, err := t.exec(`UPDATE api_keys SET revoked = true WHERE tenant = $1 AND id = $2`, tenant, id)
	return tag.RowsAffected() > 0, err
}

func (t *tx) PruneEnded(ctx context.Context, before time.Time) error {
	_, err := t.exec(`DELETE FROM ended_leases WHERE ended_at < $1`, before)
	return err
}
