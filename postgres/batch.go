package postgres

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/dlmhq/dlm"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// batch is one PostgreSQL transaction on one connection. It serves the fn of
// one Update or View, or, as a group (see commit.go), the fns of many Updates
// at once, each through a tx of its own.
//
// Reads travel in rounds: one round trip carries BEGIN (the first time), the
// reads every waiting fn asked for, with the locks of all of them loaded by
// a few multi-row statements, and a read of the clock. In a group the fns run
// concurrently, in their callers' goroutines, and a round is sent when none
// of them is running: each has asked for a read, finished, or is waiting for
// a lock that another fn of the group is using. Writes wait for the end:
// the changes every fn saved are folded into a few multi-row statements
// that travel with COMMIT. A fn that fails therefore leaves nothing behind,
// and no savepoint is needed.
//
// A group never waits for a lock that a fn needs: it locks rows FOR UPDATE
// SKIP LOCKED and only tries advisory locks, and a fn that finds its lock
// taken moves to a transaction of its own, where it waits (so does a fn that
// writes directly; see tx.moveOut). Such a transaction waits while holding
// at most the locks a fn holds before group commit, so waits never form a
// cycle through a group. At commit a group does wait, for the usage
// counters: every transaction takes these last, and holds nothing that is
// taken after them.
type batch struct {
	s     *Store
	conn  *pgx.Conn
	ctx   context.Context
	write bool
	group bool
	shard int32 // this transaction's usage counter shard (see usageShards)

	// mu guards everything below. In a group, a round is sent with mu
	// held, while every fn waits.
	mu    sync.Mutex
	begun bool
	// A View that reads events settles the log first (events.go): it
	// reads ids up to upto.
	settled bool
	upto    int64
	err     error     // the first failure: the transaction is over
	now     time.Time // clock_timestamp() after the latest round's locks

	// A group's coordination: running counts the fns neither finished nor
	// waiting; when it falls to 0 the committer is kicked to send asks.
	running int
	asks    []*ask
	kick    chan struct{}

	locks map[dlm.Key]*held          // every lock loaded, by key
	found map[string]*foundLease     // FindLease answers from the database
	usage map[string]*usageCount     // tenants' counts as read
	idem  map[[2]string]*tx          // idempotency keys looked up, by (tenant, key)
	w     writes                     // what the fns that finished saved
	fresh map[dlm.Key]*dlm.LockState // the locks one round loaded

	// behind, in a group, is the group before it while that one commits:
	// a round that would load one of its locks waits for its commit (see
	// commit.go).
	behind *committing
	// committed, in a group, answers its Updates once its COMMIT has
	// been answered.
	committed func(error)
}

// held is a lock the transaction has loaded (and, writing, locked).
type held struct {
	state *dlm.LockState // after the last fn that saved it; nil while loading
	owner *tx            // the fn using it; nil when free
	busy  bool           // another transaction holds its row (group only)
	next  []chan struct{}
}

// foundLease is what the database holds of a lease ID that FindLease
// looked up: the live lease, or the ended one, which is looked for only when
// there is no live one (release and renew find a live one).
type foundLease struct {
	live      *dlm.Lease
	ended     *dlm.EndedLease
	endedRead bool
}

type usageCount struct{ leases, waiters int64 }

// ask is one fn's read: the locks to load, the leases to find (live or
// ended) and the tenants whose usage to read, merged with the other asks of
// its round, and any other statements.
type ask struct {
	keys    []dlm.Key
	ids     []string
	ended   []string
	tenants []string
	build   func(pb *pgx.Batch)
	done    chan struct{}
}

func newBatch(ctx context.Context, s *Store, conn *pgx.Conn, write, group bool) *batch {
	return &batch{
		s: s, conn: conn, ctx: ctx, write: write, group: group,
		shard: rand.Int32N(usageShards),
		kick:  make(chan struct{}, 1),
		locks: map[dlm.Key]*held{},
		found: map[string]*foundLease{},
		usage: map[string]*usageCount{},
		idem:  map[[2]string]*tx{},
		w:     newWrites(),
	}
}

// await has a sent in a round and returns when its answers are in. b.mu is
// held on entry and on return. Alone, the fn sends the round itself; in a
// group it waits for the committer to send it with the others.
func (b *batch) await(a *ask) error {
	if b.err != nil {
		return b.err
	}
	if !b.group {
		return b.round([]*ask{a})
	}
	a.done = make(chan struct{})
	b.asks = append(b.asks, a)
	b.idle()
	b.mu.Unlock()
	<-a.done
	b.mu.Lock()
	return b.err
}

// idle counts one fn less running, and kicks the committer when none is.
func (b *batch) idle() {
	b.running--
	if b.running == 0 {
		select {
		case b.kick <- struct{}{}:
		default:
		}
	}
}

// drive sends a group's rounds until every fn has finished.
func (b *batch) drive() {
	for range b.kick {
		b.mu.Lock()
		if b.running > 0 {
			b.mu.Unlock()
			continue
		}
		asks := b.asks
		if len(asks) == 0 {
			// Nobody runs or asks, so nobody waits for a lock either:
			// its user would be running or asking.
			b.mu.Unlock()
			return
		}
		b.asks = nil
		b.round(asks)
		b.running += len(asks)
		for _, a := range asks {
			close(a.done)
		}
		b.mu.Unlock()
	}
}

// round sends asks in one round trip and files the answers. b.mu is held.
func (b *batch) round(asks []*ask) error {
	if c := b.behind; c != nil && c.overlaps(asks) {
		<-c.done
		b.behind = nil
	}
	pb := &pgx.Batch{}
	if !b.begun {
		if b.write {
			pb.Queue(`BEGIN`)
		} else {
			pb.Queue(`BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY`)
		}
		b.begun = true
	}
	var (
		keys       []dlm.Key
		ids, ended []string
		tenants    []string
	)
	for _, a := range asks {
		keys = append(keys, a.keys...)
		ids = append(ids, a.ids...)
		ended = append(ended, a.ended...)
		tenants = append(tenants, a.tenants...)
		if a.build != nil {
			a.build(pb)
		}
	}
	slices.SortFunc(keys, compareKeys)
	keys = slices.Compact(keys)
	slices.Sort(ids)
	ids = slices.Compact(ids)
	slices.Sort(tenants)
	tenants = slices.Compact(tenants)
	if len(keys) > 0 || len(ids) > 0 {
		b.fresh = map[dlm.Key]*dlm.LockState{}
		b.queueLoad(pb, keys, ids)
	}
	if len(ended) > 0 {
		b.queueEnded(pb, ended)
	}
	if len(tenants) > 0 {
		b.queueUsage(pb, tenants)
	}
	// Last, so that it is read after the round's locks are granted.
	pb.Queue(`SELECT clock_timestamp()`).QueryRow(func(r pgx.Row) error {
		var now time.Time
		err := r.Scan(&now)
		b.now = now.UTC()
		return err
	})
	if f := b.s.opts.beforeLoad; f != nil && b.fresh != nil {
		f(b.conn.PgConn().PID(), keys)
	}
	if err := b.conn.SendBatch(b.ctx, pb).Close(); err != nil {
		b.err = err
		return err
	}
	for k, s := range b.fresh {
		if h := b.locks[k]; h == nil {
			b.locks[k] = &held{state: s}
		} else if h.state == nil {
			h.state = s
		}
	}
	b.fresh = nil
	for _, k := range keys {
		h := b.locks[k]
		switch {
		case h != nil && h.state != nil:
		case !b.group:
			b.err = errors.New("lock row missing after insert: " + k.Name)
			return b.err
		case h == nil:
			b.locks[k] = &held{busy: true}
		default:
			h.busy = true
		}
	}
	if b.write && b.group {
		// A lease found whose lock was not locked: someone else has it.
		for _, id := range ids {
			if f := b.found[id]; f != nil && f.live != nil && b.locks[f.live.Key] == nil {
				b.locks[f.live.Key] = &held{busy: true}
			}
		}
	}
	return nil
}

func compareKeys(a, b dlm.Key) int {
	if c := strings.Compare(a.Namespace, b.Namespace); c != 0 {
		return c
	}
	return strings.Compare(a.Name, b.Name)
}

// queueLoad queues the reads of the leases ids and of the state of keys and,
// writing, of the leases' locks too, into b.fresh. Writing, it first creates
// the rows of keys that have none and locks them all FOR UPDATE (SKIP LOCKED
// in a group), and reads the holders and waiters after the locks are
// granted; states are kept only for the locks it newly locked. Waiters of
// instances that are gone are left out and, writing, deleted at commit.
func (b *batch) queueLoad(pb *pgx.Batch, keys []dlm.Key, ids []string) {
	ns, names := make([]string, len(keys)), make([]string, len(keys))
	for i, k := range keys {
		ns[i], names[i] = k.Namespace, k.Name
	}
	if len(ids) > 0 {
		for _, id := range ids {
			b.foundFor(id)
		}
		queueQuery(pb, func(r pgx.Rows) error {
			var l dlm.Lease
			err := scanHolder(r, &l)
			b.found[l.ID].live = &l
			return err
		}, `SELECT `+holderCols+` FROM leases WHERE id = ANY($1)`, ids)
	}
	// The locks to load: keys and, writing, the locks of the leases ids.
	var (
		keysSQL string
		args    []any
	)
	switch {
	case b.write && len(ids) > 0 && len(keys) > 0:
		keysSQL = `SELECT * FROM unnest($1::text[], $2::text[]) UNION SELECT ns, name FROM leases WHERE id = ANY($3::text[])`
		args = []any{ns, names, ids}
	case b.write && len(ids) > 0:
		keysSQL = `SELECT ns, name FROM leases WHERE id = ANY($1::text[])`
		args = []any{ids}
	case len(keys) > 0:
		keysSQL = `SELECT * FROM unnest($1::text[], $2::text[])`
		args = []any{ns, names}
	default:
		return
	}
	sel := `SELECT ns, name, token FROM locks WHERE (ns, name) IN (` + keysSQL + `)`
	if b.write {
		// A missing row is inserted under an advisory lock on its name,
		// held to commit, so that an insert never waits for another
		// transaction's uncommitted insert of the same row: a group only
		// tries the lock (a fn whose row it could not insert finds its
		// lock busy and moves), and a fn alone waits for it.
		take := `pg_try_advisory_xact_lock($3, hashtext(k.ns || '/' || k.name))`
		if !b.group {
			take = `(SELECT true FROM pg_advisory_xact_lock($3, hashtext(k.ns || '/' || k.name)))`
		}
		if len(keys) > 0 {
			pb.Queue(`INSERT INTO locks (ns, name) SELECT * FROM unnest($1::text[], $2::text[]) k (ns, name)
				WHERE CASE WHEN EXISTS (SELECT FROM locks l WHERE l.ns = k.ns AND l.name = k.name) THEN false ELSE `+take+` END
				ON CONFLICT DO NOTHING`, ns, names, b.s.newLockKey)
		}
		sel += ` FOR UPDATE OF locks`
		if b.group {
			sel += ` SKIP LOCKED`
		}
	} else {
		// Reading, every key answers, used or not.
		for _, k := range keys {
			if h := b.locks[k]; h == nil || h.state == nil {
				b.fresh[k] = &dlm.LockState{Key: k}
			}
		}
	}
	queueQuery(pb, func(r pgx.Rows) error {
		var k dlm.Key
		var token int64
		if err := r.Scan(&k.Namespace, &k.Name, &token); err != nil {
			return err
		}
		if h := b.locks[k]; h == nil || h.state == nil {
			b.fresh[k] = &dlm.LockState{Key: k, Token: token}
		}
		return nil
	}, sel, args...)
	queueQuery(pb, func(r pgx.Rows) error {
		var l dlm.Lease
		if err := scanHolder(r, &l); err != nil {
			return err
		}
		if s := b.fresh[l.Key]; s != nil {
			s.Holders = append(s.Holders, l)
		}
		return nil
	}, `SELECT `+holderCols+` FROM leases WHERE (ns, name) IN (`+keysSQL+`) ORDER BY ns, name, token`, args...)
	queueQuery(pb, func(r pgx.Rows) error {
		var w dlm.Waiter
		var mode int16
		var ttl int64
		var idem *string
		var live bool
		err := r.Scan(&w.ID, &w.Tenant, &w.Key.Namespace, &w.Key.Name, &w.Seq, &mode, &w.HolderID, &ttl, &idem,
			&w.Ticket, &w.QueuedAt, &w.Deadline, &live)
		if err != nil {
			return err
		}
		w.Mode, w.TTL = dlm.Mode(mode), time.Duration(ttl)
		w.QueuedAt, w.Deadline = w.QueuedAt.UTC(), w.Deadline.UTC()
		if idem != nil {
			w.IdempotencyKey = *idem
		}
		s := b.fresh[w.Key]
		switch {
		case s == nil:
		case live:
			s.Waiters = append(s.Waiters, w)
		case b.write:
			// Its request died with its instance. No event: nothing
			// happened to the lock.
			b.w.dropWaiter(w)
		}
		return nil
	}, `SELECT id, tenant, ns, name, seq, mode, holder, ttl, idem, ticket, queued_at, deadline, `+alive(len(args)+1)+`
		FROM waiters w WHERE (ns, name) IN (`+keysSQL+`) ORDER BY ns, name, seq`,
		append(args, b.s.opts.DeadAfter.Seconds())...)
}

// queueEnded queues the reads of the ended leases ids.
func (b *batch) queueEnded(pb *pgx.Batch, ids []string) {
	for _, id := range ids {
		b.foundFor(id).endedRead = true
	}
	queueQuery(pb, func(r pgx.Rows) error {
		var e dlm.EndedLease
		var reason int16
		err := scanLease(r, &e.Lease, &reason, &e.EndedAt)
		e.Reason, e.EndedAt = dlm.EndReason(reason), e.EndedAt.UTC()
		b.found[e.ID].ended = &e
		return err
	}, `SELECT `+leaseCols+`, reason, ended_at FROM ended_leases WHERE id = ANY($1)`, ids)
}

func (b *batch) foundFor(id string) *foundLease {
	f := b.found[id]
	if f == nil {
		f = &foundLease{}
		b.found[id] = f
	}
	return f
}

// queueUsage queues the reads of the counts of tenants.
func (b *batch) queueUsage(pb *pgx.Batch, tenants []string) {
	queueQuery(pb, func(r pgx.Rows) error {
		var tn string
		u := &usageCount{}
		err := r.Scan(&tn, &u.leases, &u.waiters)
		b.usage[tn] = u
		return err
	}, `SELECT t, (SELECT coalesce(sum(n), 0) FROM lease_usage WHERE tenant = t)::bigint,
		(SELECT coalesce(sum(n), 0) FROM waiter_usage WHERE tenant = t)::bigint
		FROM unnest($1::text[]) t`, tenants)
}

// commit sends what the fns saved, their events and COMMIT in one round
// trip.
func (b *batch) commit() error {
	if b.err != nil || !b.begun {
		return b.err
	}
	pb := &pgx.Batch{}
	b.w.queue(pb, b.s.instance, b.shard)
	if len(b.w.events) > 0 {
		b.w.queueEvents(pb)
	}
	committed := false
	pb.Queue(`COMMIT`).Exec(func(ct pgconn.CommandTag) error {
		committed = ct.String() == "COMMIT"
		if !committed {
			return errors.New("transaction rolled back: " + ct.String())
		}
		return nil
	})
	err := b.conn.SendBatch(b.ctx, pb).Close()
	if !committed {
		b.err = err
		return err
	}
	b.begun = false
	return nil
}

// rollback ends a failed transaction. If even that fails, the connection is
// left in a transaction and the pool discards it.
func (b *batch) rollback() {
	if !b.begun || b.conn.IsClosed() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, _ = b.conn.Exec(ctx, `ROLLBACK`)
}

// writes is the net effect of the changes saved in a transaction, folded so
// that each lease and waiter is written once, by a few multi-row statements.
type writes struct {
	tokens  map[dlm.Key]int64
	leases  map[string]*leaseWrite
	lorder  []string
	waiters map[string]*waiterWrite
	worder  []string
	events  []dlm.Event
	// usage deltas, by tenant
	leaseUsage, waiterUsage map[string]int64
}

type leaseWrite struct {
	live   dlm.Lease // as granted or last renewed
	insert bool      // granted here
	ended  *dlm.EndedLease
}

type waiterWrite struct {
	w       dlm.Waiter
	insert  bool // queued here
	retaken bool
	deleted bool
}

func newWrites() writes {
	return writes{
		tokens: map[dlm.Key]int64{}, leases: map[string]*leaseWrite{}, waiters: map[string]*waiterWrite{},
		leaseUsage: map[string]int64{}, waiterUsage: map[string]int64{},
	}
}

func (w *writes) lease(id string) *leaseWrite {
	lw := w.leases[id]
	if lw == nil {
		lw = &leaseWrite{}
		w.leases[id] = lw
		w.lorder = append(w.lorder, id)
	}
	return lw
}

func (w *writes) waiter(id string) *waiterWrite {
	ww := w.waiters[id]
	if ww == nil {
		ww = &waiterWrite{}
		w.waiters[id] = ww
		w.worder = append(w.worder, id)
	}
	return ww
}

// apply folds in c, which left s's lock with token. Granted comes first: a
// lease that expiry granted in the past may end again in the same change.
func (w *writes) apply(k dlm.Key, token int64, c *dlm.Change) {
	if len(c.Granted) > 0 {
		w.tokens[k] = token
	}
	for _, l := range c.Granted {
		lw := w.lease(l.ID)
		lw.live, lw.insert = l, true
		w.leaseUsage[l.Tenant]++
	}
	for _, l := range c.Renewed {
		w.lease(l.ID).live = l
	}
	for _, e := range c.Ended {
		w.lease(e.ID).ended = &e
		w.leaseUsage[e.Tenant]--
	}
	for _, q := range c.Queued {
		ww := w.waiter(q.ID)
		ww.w, ww.insert = q, true
		w.waiterUsage[q.Tenant]++
	}
	for _, q := range c.Retaken {
		ww := w.waiter(q.ID)
		ww.w, ww.retaken = q, true
	}
	for _, q := range c.Dequeued {
		w.dropWaiter(q)
	}
	w.events = append(w.events, c.Events...)
}

func (w *writes) dropWaiter(q dlm.Waiter) {
	w.waiter(q.ID).deleted = true
	w.waiterUsage[q.Tenant]--
}

// queue queues the statements that write w. The usage counters come last
// and in tenant order: a transaction that updates one then waits for
// nothing, so two never wait for each other's counters.
func (w *writes) queue(pb *pgx.Batch, instance string, shard int32) {
	if len(w.tokens) > 0 {
		var ns, names []string
		var tokens []int64
		for k, t := range w.tokens {
			ns, names, tokens = append(ns, k.Namespace), append(names, k.Name), append(tokens, t)
		}
		pb.Queue(`UPDATE locks l SET token = v.token FROM unnest($1::text[], $2::text[], $3::bigint[]) v (ns, name, token)
			WHERE l.ns = v.ns AND l.name = v.name`, ns, names, tokens)
	}
	var (
		ins, ended       leaseRows
		renewed, deleted []string
		ttls             []int64
		expires          []time.Time
	)
	for _, id := range w.lorder {
		lw := w.leases[id]
		switch {
		case lw.ended != nil:
			ended.add(&lw.ended.Lease)
			ended.reasons = append(ended.reasons, int16(lw.ended.Reason))
			ended.endedAt = append(ended.endedAt, lw.ended.EndedAt)
			if !lw.insert {
				deleted = append(deleted, id)
			}
		case lw.insert:
			ins.add(&lw.live)
		default:
			renewed = append(renewed, id)
			ttls = append(ttls, int64(lw.live.TTL))
			expires = append(expires, lw.live.ExpiresAt)
		}
	}
	if len(ins.ids) > 0 {
		pb.Queue(`INSERT INTO leases (`+holderCols+`) SELECT * FROM unnest($1::text[], $2::text[], $3::text[],
			$4::text[], $5::smallint[], $6::text[], $7::bigint[], $8::bigint[], $9::timestamptz[], $10::timestamptz[], $11::text[],
			$12::bigint[])`,
			ins.args()...)
	}
	if len(renewed) > 0 {
		pb.Queue(`UPDATE leases l SET ttl = v.ttl, expires_at = v.expires_at
			FROM unnest($1::text[], $2::bigint[], $3::timestamptz[]) v (id, ttl, expires_at) WHERE l.id = v.id`,
			renewed, ttls, expires)
	}
	if len(deleted) > 0 {
		pb.Queue(`DELETE FROM leases WHERE id = ANY($1)`, deleted)
	}
	if len(ended.ids) > 0 {
		pb.Queue(`INSERT INTO ended_leases (`+leaseCols+`, reason, ended_at) SELECT * FROM unnest($1::text[], $2::text[],
			$3::text[], $4::text[], $5::smallint[], $6::text[], $7::bigint[], $8::bigint[], $9::timestamptz[], $10::timestamptz[],
			$11::smallint[], $12::timestamptz[])`,
			append(ended.args()[:10], ended.reasons, ended.endedAt)...)
	}
	w.queueWaiters(pb, instance)
	queueUsage(pb, "lease_usage", w.leaseUsage, shard)
	queueUsage(pb, "waiter_usage", w.waiterUsage, shard)
}

// leaseRows are leases as columns, for unnest.
type leaseRows struct {
	ids, tenants, ns, names, holders []string
	modes                            []int16
	tokens, ttls, requested          []int64
	acquired, expires                []time.Time
	idems                            []*string
	reasons                          []int16
	endedAt                          []time.Time
}

func (r *leaseRows) add(l *dlm.Lease) {
	r.ids, r.tenants = append(r.ids, l.ID), append(r.tenants, l.Tenant)
	r.ns, r.names = append(r.ns, l.Key.Namespace), append(r.names, l.Key.Name)
	r.modes, r.holders = append(r.modes, int16(l.Mode)), append(r.holders, l.HolderID)
	r.tokens, r.ttls = append(r.tokens, l.Token), append(r.ttls, int64(l.TTL))
	r.acquired, r.expires = append(r.acquired, l.AcquiredAt), append(r.expires, l.ExpiresAt)
	r.idems, r.requested = append(r.idems, nullable(l.IdempotencyKey)), append(r.requested, int64(l.RequestedTTL))
}

// args returns the columns in the order of holderCols; the first ten are
// leaseCols.
func (r *leaseRows) args() []any {
	return []any{r.ids, r.tenants, r.ns, r.names, r.modes, r.holders, r.tokens, r.ttls, r.acquired, r.expires, r.idems, r.requested}
}

func (w *writes) queueWaiters(pb *pgx.Batch, instance string) {
	var (
		ins                       []*dlm.Waiter
		retaken, deleted, tickets []string
		deadlines                 []time.Time
	)
	for _, id := range w.worder {
		ww := w.waiters[id]
		switch {
		case ww.insert && ww.deleted:
		case ww.deleted:
			deleted = append(deleted, id)
		case ww.insert:
			ins = append(ins, &ww.w)
		case ww.retaken:
			retaken, tickets, deadlines = append(retaken, id), append(tickets, ww.w.Ticket), append(deadlines, ww.w.Deadline)
		}
	}
	if len(deleted) > 0 {
		pb.Queue(`DELETE FROM waiters WHERE id = ANY($1)`, deleted)
	}
	if len(ins) > 0 {
		var (
			ids, tenants, ns, names, holders, tks []string
			seqs, ttls                            []int64
			modes                                 []int16
			idems                                 []*string
			queued, dls                           []time.Time
		)
		for _, q := range ins {
			ids, tenants, ns, names = append(ids, q.ID), append(tenants, q.Tenant), append(ns, q.Key.Namespace), append(names, q.Key.Name)
			seqs, modes, holders, ttls = append(seqs, q.Seq), append(modes, int16(q.Mode)), append(holders, q.HolderID), append(ttls, int64(q.TTL))
			idems, tks, queued, dls = append(idems, nullable(q.IdempotencyKey)), append(tks, q.Ticket), append(queued, q.QueuedAt), append(dls, q.Deadline)
		}
		pb.Queue(`INSERT INTO waiters (id, tenant, ns, name, seq, mode, holder, ttl, idem, ticket, queued_at, deadline, instance)
			SELECT *, $13 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::smallint[], $7::text[],
			$8::bigint[], $9::text[], $10::text[], $11::timestamptz[], $12::timestamptz[])`,
			ids, tenants, ns, names, seqs, modes, holders, ttls, idems, tks, queued, dls, instance)
	}
	if len(retaken) > 0 {
		// The retry waits here now: the entry lives as long as this instance.
		pb.Queue(`UPDATE waiters w SET ticket = v.ticket, deadline = v.deadline, instance = $4
			FROM unnest($1::text[], $2::text[], $3::timestamptz[]) v (id, ticket, deadline) WHERE w.id = v.id`,
			retaken, tickets, deadlines, instance)
	}
}

// queueEvents inserts the events in order, with ids from the sequence
// event_ids. The transaction takes its xid before the ids, as readers
// require (events.go).
func (w *writes) queueEvents(pb *pgx.Batch) {
	n := len(w.events)
	types, modes := make([]int16, n), make([]int16, n)
	ns, names, holders := make([]string, n), make([]string, n), make([]string, n)
	tokens, at := make([]int64, n), make([]time.Time, n)
	for i, e := range w.events {
		types[i], modes[i] = int16(e.Type), int16(e.Mode)
		ns[i], names[i], holders[i] = e.Key.Namespace, e.Key.Name, e.HolderID
		tokens[i], at[i] = e.Token, e.At
	}
	pb.Queue(`SELECT pg_current_xact_id()`)
	// The outer query numbers the rows as the sorted subquery yields them,
	// so that ids follow the order the events were saved in.
	pb.Queue(`INSERT INTO events (id, type, ns, name, holder, mode, token, at)
		SELECT nextval('event_ids'), v.type, v.ns, v.name, v.holder, v.mode, v.token, v.at FROM (
			SELECT * FROM unnest($1::smallint[], $2::text[], $3::text[], $4::text[], $5::smallint[], $6::bigint[], $7::timestamptz[])
				WITH ORDINALITY u (type, ns, name, holder, mode, token, at, i)
			ORDER BY i) v`, types, ns, names, holders, modes, tokens, at)
}

// queueUsage adds delta to the counters of table, tenants in order.
func queueUsage(pb *pgx.Batch, table string, delta map[string]int64, shard int32) {
	var tenants []string
	for tn, d := range delta {
		if d != 0 {
			tenants = append(tenants, tn)
		}
	}
	if len(tenants) == 0 {
		return
	}
	slices.Sort(tenants)
	ds := make([]int64, len(tenants))
	for i, tn := range tenants {
		ds[i] = delta[tn]
	}
	pb.Queue(`INSERT INTO `+table+` (tenant, shard, n) SELECT t, $2, d FROM unnest($1::text[], $3::bigint[]) v (t, d)
		ON CONFLICT (tenant, shard) DO UPDATE SET n = `+table+`.n + excluded.n`, tenants, shard, ds)
}
