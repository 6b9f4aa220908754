package sqlite

import (
	"context"
	"strings"
	"time"

	"github.com/dlmhq/dlm"
)

// rows is what one flush writes: the rows of one or more batches.
type rows struct {
	tokens   map[dlm.Key]int64
	delays   map[dlm.Key]time.Time // the last DelayUntil saved, zero when cleared
	granted  []dlm.Lease
	renewed  []dlm.Lease
	ended    []dlm.EndedLease // into ended_leases
	deleted  []string         // lease IDs to delete from leases
	queued   []dlm.Waiter
	retaken  []dlm.Waiter
	dequeued []string
	events   []dlm.Event
	// Scratch for gather: IDs created and removed within the batches. A
	// granted waiter's lease takes the waiter's ID, so leases and waiters
	// are kept apart.
	leasesBorn, leasesGone   map[string]bool
	waitersBorn, waitersGone map[string]bool
}

// gather collects the rows of batches, in order. With fresh set, none of
// the batches' rows can be in the file yet (the applier writes each batch
// once, in order), so a lease granted and ended within them, or a waiter
// queued and dequeued, is left out of the leases (waiters) table: under
// load the applier's group spans many batches, and most short leases then
// cost no lease row at all. Recovery gathers without fresh: the file may
// hold some of the journal's batches.
func (r *rows) gather(batches []applied, fresh bool) {
	if r.tokens == nil {
		r.tokens, r.delays = map[dlm.Key]int64{}, map[dlm.Key]time.Time{}
		r.leasesBorn, r.leasesGone = map[string]bool{}, map[string]bool{}
		r.waitersBorn, r.waitersGone = map[string]bool{}, map[string]bool{}
	}
	clear(r.tokens)
	clear(r.delays)
	clear(r.leasesBorn)
	clear(r.leasesGone)
	clear(r.waitersBorn)
	clear(r.waitersGone)
	r.granted, r.renewed, r.ended, r.deleted = r.granted[:0], r.renewed[:0], r.ended[:0], r.deleted[:0]
	r.queued, r.retaken, r.dequeued, r.events = r.queued[:0], r.retaken[:0], r.dequeued[:0], r.events[:0]
	if fresh {
		for _, b := range batches {
			if b.o == nil {
				continue
			}
			for i := range b.o.granted {
				r.leasesBorn[b.o.granted[i].ID] = true
			}
			for i := range b.o.ended {
				r.leasesGone[b.o.ended[i].ID] = true
			}
			for i := range b.o.queued {
				r.waitersBorn[b.o.queued[i].ID] = true
			}
			for _, id := range b.o.dequeued {
				r.waitersGone[id] = true
			}
		}
	}
	for _, b := range batches {
		o := b.o
		if o == nil {
			continue
		}
		for k, t := range o.tokens {
			r.tokens[k] = max(r.tokens[k], t)
		}
		for k, t := range o.delays {
			r.delays[k] = t
		}
		for _, l := range o.granted {
			if !r.leasesGone[l.ID] {
				r.granted = append(r.granted, l)
			}
		}
		for _, l := range o.renewed {
			if !r.leasesGone[l.ID] {
				r.renewed = append(r.renewed, l)
			}
		}
		for _, e := range o.ended {
			r.ended = append(r.ended, e)
			if !r.leasesBorn[e.ID] {
				r.deleted = append(r.deleted, e.ID)
			}
		}
		for _, w := range o.queued {
			if !r.waitersGone[w.ID] {
				r.queued = append(r.queued, w)
			}
		}
		for _, w := range o.retaken {
			if !r.waitersGone[w.ID] {
				r.retaken = append(r.retaken, w)
			}
		}
		for _, id := range o.dequeued {
			if !r.waitersBorn[id] {
				r.dequeued = append(r.dequeued, id)
			}
		}
		r.events = append(r.events, o.events...)
	}
}

// flush writes rows table by table, with multi-row statements: a batch of
// 64 acquires costs a handful of statements instead of hundreds. Every
// write is idempotent, so that recovery can apply the journal's batches
// again over a file that may hold some of them. Every row's life runs
// insert → update → delete, and IDs are unique, so running the inserts of a
// table before its updates and deletes is right whatever the order of the
// saves.
func (w *writer) flush(ctx context.Context, dc any, o *rows) error {
	tokens := make([]any, 0, 3*len(o.tokens))
	for k, t := range o.tokens {
		tokens = append(tokens, k.Namespace, k.Name, t)
	}
	delays := make([]any, 0, 3*len(o.delays))
	for k, t := range o.delays {
		delays = append(delays, k.Namespace, k.Name, nullTime(t))
	}
	steps := []struct {
		query string
		cols  int
		n     int
		row   func(args []any, i int) []any
	}{
		{`INSERT INTO locks (ns, name, token) VALUES %s ON CONFLICT (ns, name) DO UPDATE SET token = max(token, excluded.token)`,
			3, len(o.tokens), func(args []any, i int) []any { return append(args, tokens[3*i:3*i+3]...) }},
		// After the tokens: the lock of a lock-delay has its row by then
		// (its lease was granted), so the insert never runs.
		{`INSERT INTO locks (ns, name, token, delay_until) VALUES %s ON CONFLICT (ns, name) DO UPDATE SET delay_until = excluded.delay_until`,
			4, len(o.delays), func(args []any, i int) []any {
				return append(args, delays[3*i], delays[3*i+1], int64(0), delays[3*i+2])
			}},
		{`INSERT OR REPLACE INTO leases (` + holderCols + `) VALUES %s`, 15, len(o.granted), func(args []any, i int) []any {
			l := &o.granted[i]
			return append(args, l.ID, l.Tenant, l.Key.Namespace, l.Key.Name, int64(l.Mode), l.HolderID, l.Token,
				int64(l.TTL), nanos(l.AcquiredAt), nanos(l.ExpiresAt), int64(l.Limit), int64(l.LockDelay), int64(l.MaxHold),
				nullable(l.IdempotencyKey), int64(l.RequestedTTL))
		}},
		{`UPDATE leases SET ttl = ?, expires_at = ? WHERE id = ?`, 0, len(o.renewed), func(args []any, i int) []any {
			l := &o.renewed[i]
			return append(args, int64(l.TTL), nanos(l.ExpiresAt), l.ID)
		}},
		{`DELETE FROM leases WHERE id IN %s`, 1, len(o.deleted), func(args []any, i int) []any {
			return append(args, o.deleted[i])
		}},
		{`INSERT OR REPLACE INTO ended_leases (` + leaseCols + `, reason, ended_at) VALUES %s`, 15, len(o.ended), func(args []any, i int) []any {
			e := &o.ended[i]
			return append(args, e.ID, e.Tenant, e.Key.Namespace, e.Key.Name, int64(e.Mode), e.HolderID, e.Token,
				int64(e.TTL), nanos(e.AcquiredAt), nanos(e.ExpiresAt), int64(e.Limit), int64(e.LockDelay), int64(e.MaxHold),
				int64(e.Reason), nanos(e.EndedAt))
		}},
		{`INSERT OR REPLACE INTO waiters (` + waiterCols + `) VALUES %s`,
			17, len(o.queued), func(args []any, i int) []any {
				q := &o.queued[i]
				return append(args, q.ID, q.Tenant, q.Key.Namespace, q.Key.Name, int64(q.Seq), int64(q.Mode), q.HolderID,
					int64(q.TTL), nullable(q.IdempotencyKey), q.Ticket, nanos(q.QueuedAt), nanos(q.Deadline),
					int64(q.Limit), int64(q.LockDelay), int64(q.MaxHold), nullable(q.Group), groupKeysColumn(q.GroupKeys))
			}},
		{`UPDATE waiters SET ticket = ?, deadline = ? WHERE id = ?`, 0, len(o.retaken), func(args []any, i int) []any {
			q := &o.retaken[i]
			return append(args, q.Ticket, nanos(q.Deadline), q.ID)
		}},
		{`DELETE FROM waiters WHERE id IN %s`, 1, len(o.dequeued), func(args []any, i int) []any {
			return append(args, o.dequeued[i])
		}},
		{`INSERT OR REPLACE INTO events (id, type, ns, name, holder, mode, token, at) VALUES %s`, 8, len(o.events), func(args []any, i int) []any {
			e := &o.events[i]
			return append(args, e.ID, int64(e.Type), e.Key.Namespace, e.Key.Name, e.HolderID, int64(e.Mode), e.Token, nanos(e.At))
		}},
	}
	for _, st := range steps {
		if err := w.multi(ctx, dc, st.query, st.cols, st.n, st.row); err != nil {
			return err
		}
	}
	return nil
}

// chunkSizes are the row counts of the multi-row statements: few enough
// distinct statements to keep them all prepared, large enough that a batch
// needs few of them.
var chunkSizes = [...]int{64, 8, 1}

// multi runs query for n rows on the driver connection dc. With cols > 0
// the query's %s becomes a list of up to 64 rows of cols placeholders each
// ("(?, ?), (?, ?)" — or "(?, ?)" for an IN list with cols 1); with cols 0
// it runs once per row as it is. row appends driver values (int64, string,
// nil): there is no database/sql to convert them.
func (w *writer) multi(ctx context.Context, dc any, query string, cols, n int, row func(args []any, i int) []any) error {
	for start := 0; start < n; {
		size := 1
		if cols > 0 {
			for _, size = range chunkSizes {
				if size <= n-start {
					break
				}
			}
		}
		args := w.args[:0]
		for i := start; i < start+size; i++ {
			args = row(args, i)
		}
		if err := w.rawExec(ctx, dc, w.expand(query, cols, size), args); err != nil {
			return unavailable(err)
		}
		w.args = args[:0]
		start += size
	}
	return nil
}

// expand returns query with its row list for size rows, made once.
func (w *writer) expand(query string, cols, size int) string {
	if cols == 0 {
		return query
	}
	k := expansion{query, size}
	if q, ok := w.expanded[k]; ok {
		return q
	}
	var list string
	if cols == 1 {
		list = "(" + strings.Repeat("?, ", size-1) + "?)"
	} else {
		tuple := "(" + strings.Repeat("?, ", cols-1) + "?)"
		list = strings.Repeat(tuple+", ", size-1) + tuple
	}
	q := strings.Replace(query, "%s", list, 1)
	w.expanded[k] = q
	return q
}

type expansion struct {
	query string
	size  int
}
