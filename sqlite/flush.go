package sqlite

import (
	"context"
	"strings"
)

// flush writes the rows that a batch's Updates saved, table by table, with
// multi-row statements: a batch of 64 acquires costs a handful of statements
// instead of hundreds. Every write is idempotent, so that recovery can
// apply the journal's batches again over a file that may hold some of them. Every row's life runs insert → update → delete, and
// IDs are unique, so running the inserts of a table before its updates and
// deletes is right whatever the order of the Updates.
func (c *committer) flush(ctx context.Context, o *overlay) error {
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
		{`INSERT OR REPLACE INTO leases (` + leaseCols + `, idem) VALUES %s`, 11, len(o.granted), func(args []any, i int) []any {
			l := &o.granted[i]
			return append(args, l.ID, l.Tenant, l.Key.Namespace, l.Key.Name, l.Mode, l.HolderID, l.Token,
				int64(l.TTL), nanos(l.AcquiredAt), nanos(l.ExpiresAt), nullable(l.IdempotencyKey))
		}},
		{`UPDATE leases SET ttl = ?, expires_at = ? WHERE id = ?`, 0, len(o.renewed), func(args []any, i int) []any {
			l := &o.renewed[i]
			return append(args, int64(l.TTL), nanos(l.ExpiresAt), l.ID)
		}},
		{`DELETE FROM leases WHERE id IN %s`, 1, len(o.ended), func(args []any, i int) []any {
			return append(args, o.ended[i].ID)
		}},
		{`INSERT OR REPLACE INTO ended_leases (` + leaseCols + `, reason, ended_at) VALUES %s`, 12, len(o.ended), func(args []any, i int) []any {
			e := &o.ended[i]
			return append(args, e.ID, e.Tenant, e.Key.Namespace, e.Key.Name, e.Mode, e.HolderID, e.Token,
				int64(e.TTL), nanos(e.AcquiredAt), nanos(e.ExpiresAt), e.Reason, nanos(e.EndedAt))
		}},
		{`INSERT OR REPLACE INTO waiters (id, tenant, ns, name, seq, mode, holder, ttl, idem, ticket, queued_at, deadline) VALUES %s`,
			12, len(o.queued), func(args []any, i int) []any {
				w := &o.queued[i]
				return append(args, w.ID, w.Tenant, w.Key.Namespace, w.Key.Name, w.Seq, w.Mode, w.HolderID,
					int64(w.TTL), nullable(w.IdempotencyKey), w.Ticket, nanos(w.QueuedAt), nanos(w.Deadline))
			}},
		{`UPDATE waiters SET ticket = ?, deadline = ? WHERE id = ?`, 0, len(o.retaken), func(args []any, i int) []any {
			w := &o.retaken[i]
			return append(args, w.Ticket, nanos(w.Deadline), w.ID)
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
		if err := c.multi(ctx, st.query, st.cols, st.n, st.row); err != nil {
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
func (c *committer) multi(ctx context.Context, query string, cols, n int, row func(args []any, i int) []any) error {
	for start := 0; start < n; {
		size := 1
		if cols > 0 {
			for _, size = range chunkSizes {
				if size <= n-start {
					break
				}
			}
		}
		args := c.args[:0]
		for i := start; i < start+size; i++ {
			args = row(args, i)
		}
		if _, err := c.stmts.ExecContext(ctx, c.expand(query, cols, size), args...); err != nil {
			return unavailable(err)
		}
		c.args = args[:0]
		start += size
	}
	return nil
}

// expand returns query with its row list for size rows, made once.
func (c *committer) expand(query string, cols, size int) string {
	if cols == 0 {
		return query
	}
	k := expansion{query, size}
	if q, ok := c.expanded[k]; ok {
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
	c.expanded[k] = q
	return q
}

type expansion struct {
	query string
	size  int
}
