package postgres

import (
	"fmt"
	"strings"
	"time"

	"github.com/dlmhq/dlm"
	"github.com/jackc/pgx/v5"
)

// The columns of leases and waiters as the store reads them, and the
// statements that read lock states: shared by Load and View.

const leaseCols = `id, tenant, ns, name, mode, holder, token, ttl, acquired_at, expires_at, lim, lock_delay, max_hold`

func scanLease(r pgx.Rows, l *dlm.Lease, extra ...any) error {
	var mode int16
	var ttl, delay, hold int64
	var limit int32
	err := r.Scan(append([]any{&l.ID, &l.Tenant, &l.Key.Namespace, &l.Key.Name, &mode,
		&l.HolderID, &l.Token, &ttl, &l.AcquiredAt, &l.ExpiresAt, &limit, &delay, &hold}, extra...)...)
	l.Mode, l.TTL = dlm.Mode(mode), time.Duration(ttl)
	l.Limit, l.LockDelay, l.MaxHold = int(limit), time.Duration(delay), time.Duration(hold)
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

// scanEnded scans leaseCols, reason and ended_at.
func scanEnded(r pgx.Rows, e *dlm.EndedLease) error {
	var reason int16
	err := scanLease(r, &e.Lease, &reason, &e.EndedAt)
	e.Reason, e.EndedAt = dlm.EndReason(reason), e.EndedAt.UTC()
	return err
}

func nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
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

// alive is the condition that waiter w belongs to a live instance. $n is the
// number of seconds after which an instance that has not recorded a heartbeat
// counts as gone. For as long after the server (re)started, nobody counts as
// gone: no instance could record a heartbeat while it was down.
func alive(n int) string {
	return fmt.Sprintf(`(EXISTS (SELECT 1 FROM instances i WHERE i.id = w.instance
			AND i.seen_at > clock_timestamp() - make_interval(secs => $%[1]d))
		OR pg_postmaster_start_time() > clock_timestamp() - make_interval(secs => $%[1]d))`, n)
}

func compareKeys(a, b dlm.Key) int {
	if c := strings.Compare(a.Namespace, b.Namespace); c != 0 {
		return c
	}
	return strings.Compare(a.Name, b.Name)
}

// keyColumns splits keys into the two arrays the statements unnest.
func keyColumns(keys []dlm.Key) (ns, names []string) {
	ns, names = make([]string, len(keys)), make([]string, len(keys))
	for i, k := range keys {
		ns[i], names[i] = k.Namespace, k.Name
	}
	return ns, names
}

// queueStates queues the reads of the locks that keysSQL (with args) names:
// their tokens, then their holders and waiters, into states. With lock, the
// locks rows are locked FOR UPDATE in key order first (so that transactions
// that lock overlapping sets never wait for each other in a cycle) and the
// holders and waiters, read by later statements, are those after the locks
// were granted. Only locks with a row get a state. Waiters of instances that
// are gone are left out and passed to dead.
func queueStates(pb *pgx.Batch, keysSQL string, args []any, lock bool, deadAfter time.Duration,
	states map[dlm.Key]*dlm.LockState, dead func(dlm.Waiter)) {
	sel := `SELECT ns, name, token, delay_until FROM locks WHERE (ns, name) IN (` + keysSQL + `) ORDER BY ns, name`
	if lock {
		sel += ` FOR UPDATE OF locks`
	}
	queueQuery(pb, func(r pgx.Rows) error {
		var k dlm.Key
		var token int64
		var delay *time.Time
		if err := r.Scan(&k.Namespace, &k.Name, &token, &delay); err != nil {
			return err
		}
		s := &dlm.LockState{Key: k, Token: token}
		if delay != nil {
			s.DelayUntil = delay.UTC()
		}
		states[k] = s
		return nil
	}, sel, args...)
	queueQuery(pb, func(r pgx.Rows) error {
		var l dlm.Lease
		if err := scanHolder(r, &l); err != nil {
			return err
		}
		if s := states[l.Key]; s != nil {
			s.Holders = append(s.Holders, l)
		}
		return nil
	}, `SELECT `+holderCols+` FROM leases WHERE (ns, name) IN (`+keysSQL+`) ORDER BY ns, name, token`, args...)
	queueQuery(pb, func(r pgx.Rows) error {
		var w dlm.Waiter
		var mode int16
		var ttl, delay, hold int64
		var limit int32
		var idem, group, keys *string
		var live bool
		err := r.Scan(&w.ID, &w.Tenant, &w.Key.Namespace, &w.Key.Name, &w.Seq, &mode, &w.HolderID, &ttl, &idem,
			&w.Ticket, &w.QueuedAt, &w.Deadline, &limit, &delay, &hold, &group, &keys, &live)
		if err != nil {
			return err
		}
		w.Mode, w.TTL = dlm.Mode(mode), time.Duration(ttl)
		w.QueuedAt, w.Deadline = w.QueuedAt.UTC(), w.Deadline.UTC()
		w.Limit, w.LockDelay, w.MaxHold = int(limit), time.Duration(delay), time.Duration(hold)
		if idem != nil {
			w.IdempotencyKey = *idem
		}
		if group != nil {
			w.Group = *group
		}
		if w.GroupKeys, err = parseGroupKeys(keys); err != nil {
			return err
		}
		switch s := states[w.Key]; {
		case s == nil:
		case live:
			s.Waiters = append(s.Waiters, w)
		default:
			dead(w)
		}
		return nil
	}, `SELECT id, tenant, ns, name, seq, mode, holder, ttl, idem, ticket, queued_at, deadline,
			lim, lock_delay, max_hold, grp, group_keys::text, `+alive(len(args)+1)+`
		FROM waiters w WHERE (ns, name) IN (`+keysSQL+`) ORDER BY ns, name, seq`,
		append(args, deadAfter.Seconds())...)
}

// queueIdempotent queues the lookup of idempotency keys: the lock of each
// one's stored lease or live waiter, into found.
func queueIdempotent(pb *pgx.Batch, keys []dlm.IdempotencyKey, deadAfter time.Duration, found map[dlm.IdempotencyKey]dlm.Key) {
	tenants, idems := make([]string, len(keys)), make([]string, len(keys))
	for i, k := range keys {
		tenants[i], idems[i] = k.Tenant, k.Key
	}
	queueQuery(pb, func(r pgx.Rows) error {
		var ik dlm.IdempotencyKey
		var k dlm.Key
		err := r.Scan(&ik.Tenant, &ik.Key, &k.Namespace, &k.Name)
		found[ik] = k
		return err
	}, `SELECT u.tenant, u.idem, x.ns, x.name FROM unnest($1::text[], $2::text[]) u (tenant, idem)
		CROSS JOIN LATERAL (SELECT ns, name FROM leases WHERE tenant = u.tenant AND idem = u.idem
			UNION ALL SELECT ns, name FROM waiters w WHERE tenant = u.tenant AND idem = u.idem AND `+alive(3)+`
			LIMIT 1) x`,
		tenants, idems, deadAfter.Seconds())
}
