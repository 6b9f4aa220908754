package sqlite

import (
	"context"
	"maps"
	"slices"
	"strings"

	"github.com/dlmhq/dlm"
)

// rows is what one flush writes: the rows of one or more batches.
type rows struct {
	tokens   map[dlm.Key]int64
	granted  []dlm.Lease
	renewed  []dlm.Lease
	ended    []dlm.EndedLease // into ended_leases
	deleted  []string         // lease IDs to delete from leases
	queued   []dlm.Waiter
	retaken  []dlm.Waiter
	dequeued []string
	events   []dlm.Event
}

// gather collects the rows of batches, in order: with all, every row the
// batches changed (recovery, replaying the journals); without, only their
// history, ended leases and events, which the file serves to reads. The
// live locks reach the file as snapshots instead (writeLocks), when a
// journal is retired.
func (r *rows) gather(batches []applied, all bool) {
	if r.tokens == nil {
		r.tokens = map[dlm.Key]int64{}
	}
	clear(r.tokens)
	r.granted, r.renewed, r.ended, r.deleted = r.granted[:0], r.renewed[:0], r.ended[:0], r.deleted[:0]
	r.queued, r.retaken, r.dequeued, r.events = r.queued[:0], r.retaken[:0], r.dequeued[:0], r.events[:0]
	for _, b := range batches {
		o := b.o
		if o == nil {
			continue
		}
		r.ended = append(r.ended, o.ended...)
		r.events = append(r.events, o.events...)
		if !all {
			continue
		}
		for k, t := range o.tokens {
			r.tokens[k] = max(r.tokens[k], t)
		}
		r.granted = append(r.granted, o.granted...)
		r.renewed = append(r.renewed, o.renewed...)
		for i := range o.ended {
			r.deleted = append(r.deleted, o.ended[i].ID)
		}
		r.queued = append(r.queued, o.queued...)
		r.retaken = append(r.retaken, o.retaken...)
		r.dequeued = append(r.dequeued, o.dequeued...)
	}
}

// writeLocks makes the file's rows of the locks keys (their token, holders
// and waiters) what memory holds now, in the transaction under way on the
// write connection. Now may be later than the journal record that made a
// lock dirty: recovery replays the records since over these rows, and every
// row write is idempotent. It copies locksChunk locks at a time, so that
// commits wait little for memMu.
func (c *committer) writeLocks(ctx context.Context, keys map[dlm.Key]struct{}) error {
	w := c.w
	all := slices.Collect(maps.Keys(keys))
	for start := 0; start < len(all); start += locksChunk {
		chunk := all[start:min(start+locksChunk, len(all))]
		r := &w.rows
		r.gather(nil, false) // empties r
		c.memMu.RLock()
		for _, k := range chunk {
			if s := c.mem.state(k); s != nil {
				if s.Token > 0 {
					r.tokens[k] = s.Token
				}
				r.granted = append(r.granted, s.Holders...)
				r.queued = append(r.queued, s.Waiters...)
			}
		}
		c.memMu.RUnlock()
		for _, k := range chunk {
			for _, q := range []string{`DELETE FROM leases WHERE ns = ? AND name = ?`, `DELETE FROM waiters WHERE ns = ? AND name = ?`} {
				if _, err := w.stmts.ExecContext(ctx, q, k.Namespace, k.Name); err != nil {
					return unavailable(err)
				}
			}
		}
		if err := w.flush(ctx, r); err != nil {
			return err
		}
	}
	return nil
}

const locksChunk = 256

// flush writes rows table by table, with multi-row statements: 64 rows
// cost a handful of statements instead of hundreds. Every
// write is idempotent, so that recovery can apply the journal's batches
// again over a file that may hold some of them. Every row's life runs
// insert → update → delete, and IDs are unique, so running the inserts of a
// table before its updates and deletes is right whatever the order of the
// Updates.
func (w *writer) flush(ctx context.Context, o *rows) error {
	tokens := make([]any, 0, 3*len(o.tokens))
	for k, t := range o.tokens {
		tokens = append(tokens, k.Namespace, k.Name, t)
	}
	steps := []struct {
		query string
		cols  int
		n     int
		row   func(args []any, i int) []any
	}{
		{`INSERT INTO locks (ns, name, token) VALUES %s ON CONFLICT (ns, name) DO UPDATE SET token = max(token, excluded.token)`,
			3, len(o.tokens), func(args []any, i int) []any { return append(args, tokens[3*i:3*i+3]...) }},
		{`INSERT OR REPLACE INTO leases (` + holderCols + `) VALUES %s`, 12, len(o.granted), func(args []any, i int) []any {
			l := &o.granted[i]
			return append(args, l.ID, l.Tenant, l.Key.Namespace, l.Key.Name, l.Mode, l.HolderID, l.Token,
				int64(l.TTL), nanos(l.AcquiredAt), nanos(l.ExpiresAt), nullable(l.IdempotencyKey), int64(l.RequestedTTL))
		}},
		{`UPDATE leases SET ttl = ?, expires_at = ? WHERE id = ?`, 0, len(o.renewed), func(args []any, i int) []any {
			l := &o.renewed[i]
			return append(args, int64(l.TTL), nanos(l.ExpiresAt), l.ID)
		}},
		{`DELETE FROM leases WHERE id IN %s`, 1, len(o.deleted), func(args []any, i int) []any {
			return append(args, o.deleted[i])
		}},
		{`INSERT OR REPLACE INTO ended_leases (` + leaseCols + `, reason, ended_at) VALUES %s`, 12, len(o.ended), func(args []any, i int) []any {
			e := &o.ended[i]
			return append(args, e.ID, e.Tenant, e.Key.Namespace, e.Key.Name, e.Mode, e.HolderID, e.Token,
				int64(e.TTL), nanos(e.AcquiredAt), nanos(e.ExpiresAt), e.Reason, nanos(e.EndedAt))
		}},
		{`INSERT OR REPLACE INTO waiters (id, tenant, ns, name, seq, mode, holder, ttl, idem, ticket, queued_at, deadline) VALUES %s`,
			12, len(o.queued), func(args []any, i int) []any {
				q := &o.queued[i]
				return append(args, q.ID, q.Tenant, q.Key.Namespace, q.Key.Name, q.Seq, q.Mode, q.HolderID,
					int64(q.TTL), nullable(q.IdempotencyKey), q.Ticket, nanos(q.QueuedAt), nanos(q.Deadline))
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
			return append(args, e.ID, e.Type, e.Key.Namespace, e.Key.Name, e.HolderID, e.Mode, e.Token, nanos(e.At))
		}},
	}
	for _, st := range steps {
		if err := w.multi(ctx, st.query, st.cols, st.n, st.row); err != nil {
			return err
		}
	}
	return nil
}

// chunkSizes are the row counts of the multi-row statements: few enough
// distinct statements to keep them all prepared, large enough that a batch
// needs few of them.
var chunkSizes = [...]int{64, 8, 1}

// multi runs query for n rows. With cols > 0 the query's %s becomes a list
// of up to 64 rows of cols placeholders each ("(?, ?), (?, ?)" — or "(?, ?)"
// for an IN list with cols 1); with cols 0 it runs once per row as it is.
func (w *writer) multi(ctx context.Context, query string, cols, n int, row func(args []any, i int) []any) error {
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
		if _, err := w.stmts.ExecContext(ctx, w.expand(query, cols, size), args...); err != nil {
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
