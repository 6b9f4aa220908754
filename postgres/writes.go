package postgres

import (
	"context"
	"time"

	"github.com/dlmhq/dlm"
	"github.com/jackc/pgx/v5"
)

// writes is the net effect of a batch's saves, folded so that each lease
// and waiter is written once, by a few multi-row statements.
type writes struct {
	tokens  map[dlm.Key]int64
	delays  map[dlm.Key]time.Time // the lock's DelayUntil, zero when cleared
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
		tokens: map[dlm.Key]int64{}, delays: map[dlm.Key]time.Time{}, leases: map[string]*leaseWrite{}, waiters: map[string]*waiterWrite{},
		leaseUsage: map[string]int64{}, waiterUsage: map[string]int64{},
	}
}

// any reports whether w writes anything that other instances hear of.
func (w *writes) any() bool {
	return len(w.tokens)+len(w.leases)+len(w.waiters)+len(w.events) > 0
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

// apply folds in c, made on the lock whose last decision left it as s.
// Granted comes first: a lease that expiry granted in the past may end
// again in the same change.
func (w *writes) apply(s *dlm.LockState, c *dlm.Change) {
	if len(c.Granted) > 0 {
		w.tokens[s.Key] = s.Token
	}
	if c.Delayed {
		w.delays[s.Key] = s.DelayUntil
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
		w.waiter(q.ID).deleted = true
		w.waiterUsage[q.Tenant]--
	}
	w.events = append(w.events, c.Events...)
}

// queue queues the statements that write w.
func (w *writes) queue(pb *pgx.Batch, instance string) {
	if len(w.tokens) > 0 {
		var ns, names []string
		var tokens []int64
		for k, t := range w.tokens {
			ns, names, tokens = append(ns, k.Namespace), append(names, k.Name), append(tokens, t)
		}
		pb.Queue(`UPDATE locks l SET token = v.token FROM unnest($1::text[], $2::text[], $3::bigint[]) v (ns, name, token)
			WHERE l.ns = v.ns AND l.name = v.name`, ns, names, tokens)
	}
	if len(w.delays) > 0 {
		var ns, names []string
		var until []*time.Time
		for k, t := range w.delays {
			ns, names = append(ns, k.Namespace), append(names, k.Name)
			if t.IsZero() {
				until = append(until, nil)
			} else {
				until = append(until, &t)
			}
		}
		pb.Queue(`UPDATE locks l SET delay_until = v.until FROM unnest($1::text[], $2::text[], $3::timestamptz[]) v (ns, name, until)
			WHERE l.ns = v.ns AND l.name = v.name`, ns, names, until)
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
			$4::text[], $5::smallint[], $6::text[], $7::bigint[], $8::bigint[], $9::timestamptz[], $10::timestamptz[],
			$11::integer[], $12::bigint[], $13::bigint[], $14::text[], $15::bigint[])`,
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
			$11::integer[], $12::bigint[], $13::bigint[], $14::smallint[], $15::timestamptz[])`,
			append(ended.args()[:13], ended.reasons, ended.endedAt)...)
	}
	w.queueWaiters(pb, instance)
	queueUsage(pb, "lease_usage", w.leaseUsage)
	queueUsage(pb, "waiter_usage", w.waiterUsage)
}

// leaseRows are leases as columns, for unnest.
type leaseRows struct {
	ids, tenants, ns, names, holders []string
	modes                            []int16
	tokens, ttls, requested          []int64
	limits                           []int32
	delays, holds                    []int64
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
	r.limits, r.delays, r.holds = append(r.limits, int32(l.Limit)), append(r.delays, int64(l.LockDelay)), append(r.holds, int64(l.MaxHold))
}

// args returns the columns in the order of holderCols; the first thirteen
// are leaseCols.
func (r *leaseRows) args() []any {
	return []any{r.ids, r.tenants, r.ns, r.names, r.modes, r.holders, r.tokens, r.ttls, r.acquired, r.expires,
		r.limits, r.delays, r.holds, r.idems, r.requested}
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
			seqs, ttls, delays, holds             []int64
			limits                                []int32
			modes                                 []int16
			idems, groups, keys                   []*string
			queued, dls                           []time.Time
		)
		for _, q := range ins {
			ids, tenants, ns, names = append(ids, q.ID), append(tenants, q.Tenant), append(ns, q.Key.Namespace), append(names, q.Key.Name)
			seqs, modes, holders, ttls = append(seqs, q.Seq), append(modes, int16(q.Mode)), append(holders, q.HolderID), append(ttls, int64(q.TTL))
			idems, tks, queued, dls = append(idems, nullable(q.IdempotencyKey)), append(tks, q.Ticket), append(queued, q.QueuedAt), append(dls, q.Deadline)
			limits, delays, holds = append(limits, int32(q.Limit)), append(delays, int64(q.LockDelay)), append(holds, int64(q.MaxHold))
			groups, keys = append(groups, nullable(q.Group)), append(keys, groupKeysColumn(q.GroupKeys))
		}
		pb.Queue(`INSERT INTO waiters (id, tenant, ns, name, seq, mode, holder, ttl, idem, ticket, queued_at, deadline,
				lim, lock_delay, max_hold, grp, group_keys, instance)
			SELECT id, tenant, ns, name, seq, mode, holder, ttl, idem, ticket, queued_at, deadline,
				lim, lock_delay, max_hold, grp, group_keys::jsonb, $18
			FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::smallint[], $7::text[],
				$8::bigint[], $9::text[], $10::text[], $11::timestamptz[], $12::timestamptz[],
				$13::integer[], $14::bigint[], $15::bigint[], $16::text[], $17::text[])
				u (id, tenant, ns, name, seq, mode, holder, ttl, idem, ticket, queued_at, deadline,
				lim, lock_delay, max_hold, grp, group_keys)`,
			ids, tenants, ns, names, seqs, modes, holders, ttls, idems, tks, queued, dls,
			limits, delays, holds, groups, keys, instance)
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
	// The events take one block of consecutive ids (event_id_block, in the
	// schema's migrations), the i-th id for the i-th event saved, so that
	// no other commit's events come between them.
	pb.Queue(`INSERT INTO events (id, type, ns, name, holder, mode, token, at)
		SELECT b.id, u.type, u.ns, u.name, u.holder, u.mode, u.token, u.at
		FROM unnest($1::smallint[], $2::text[], $3::text[], $4::text[], $5::smallint[], $6::bigint[], $7::timestamptz[])
			WITH ORDINALITY u (type, ns, name, holder, mode, token, at, i)
		JOIN event_id_block($8) WITH ORDINALITY b (id, i) USING (i)`, types, ns, names, holders, modes, tokens, at, n)
}

// queueUsage adds delta to the counters of table of this backend ("Usage
// rows").
func queueUsage(pb *pgx.Batch, table string, delta map[string]int64) {
	var tenants []string
	var ds []int64
	for tn, d := range delta {
		if d != 0 {
			tenants, ds = append(tenants, tn), append(ds, d)
		}
	}
	if len(tenants) == 0 {
		return
	}
	pb.Queue(`INSERT INTO `+table+` (tenant, shard, n) SELECT t, pg_backend_pid(), d FROM unnest($1::text[], $2::bigint[]) v (t, d)
		ON CONFLICT (tenant, shard) DO UPDATE SET n = `+table+`.n + excluded.n`, tenants, ds)
}

// Usage rows.
//
// A tenant's counts of leases and waiters are the sums of its rows in
// lease_usage and waiter_usage. A transaction adds its deltas to the rows
// of its own backend (shard = pg_backend_pid(); the first migration's
// comment predates this), so no two transactions running at once update
// the same row: a commit never waits for another's counter row, locked
// until that one's COMMIT and WAL flush are done, whatever instance it runs
// on. A PID names one backend at a time; a backend under a reused PID adds
// to its predecessor's rows, which keeps every sum. foldUsage folds the rows
// of backends that are gone into the tenant's row 0 (no backend has PID
// 0), so a tenant has a row per backend that changed its counts lately,
// plus one.

// foldUsage folds the usage rows of backends that no longer run into row 0,
// keeping every sum. Instances take turns at it (an advisory lock, tried,
// not waited for), and it skips rows locked by a transaction in flight (of
// a backend that started under a reused PID), so it waits for nothing on
// the lock path and can be in no cycle with it. A backend that starts under
// a PID being folded waits for the fold to end, as for any row lock, and
// then adds to a fresh row.
func (s *Store) foldUsage(ctx context.Context) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var mine bool
		if err := tx.QueryRow(ctx, `SELECT pg_try_advisory_xact_lock($1)`, lockKey("fold", s.schema)).Scan(&mine); err != nil || !mine {
			return err
		}
		for _, table := range []string{"lease_usage", "waiter_usage"} {
			_, err := tx.Exec(ctx, `WITH gone AS (DELETE FROM `+table+` WHERE (tenant, shard) IN (
					SELECT tenant, shard FROM `+table+` u WHERE shard <> 0
						AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = u.shard)
					FOR UPDATE SKIP LOCKED) RETURNING tenant, n)
				INSERT INTO `+table+` (tenant, shard, n) SELECT tenant, 0, sum(n) FROM gone GROUP BY tenant
				ON CONFLICT (tenant, shard) DO UPDATE SET n = `+table+`.n + excluded.n`)
			if err != nil {
				return err
			}
		}
		return nil
	})
}
