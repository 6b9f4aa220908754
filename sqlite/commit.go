package sqlite

import (
	"context"
	"database/sql"
	"time"
)

// committer is the state of the single write connection.
type committer struct {
	conn  *sql.Conn
	stmts stmtCache
	// usage counts each tenant's stored leases and waiters, so that the
	// per-tenant caps cost no query. Only the committer touches it.
	usage map[string]*usage
	mem   *memTable
	batch *overlay
	tx    *writeTx
}

type usage struct{ leases, waiters int64 }

// commitLoop takes whatever Updates are queued, runs them in one
// transaction, commits once and answers them all; then the next queue.
// While a commit is in flight new Updates queue up, so the batch grows with
// the load and one fsync serves many operations.
func (s *Store) commitLoop() {
	defer close(s.stopped)
	ctx := context.Background()
	c, err := s.newCommitter(ctx)
	batch := make([]*request, 0, MaxBatch)
	for {
		batch = batch[:0]
		select {
		case r := <-s.reqs:
			batch = append(batch, r)
		case <-s.quit:
			// Close waits for every Update already queued.
			for {
				select {
				case r := <-s.reqs:
					s.answer([]*request{r}, c, err)
					continue
				default:
				}
				break
			}
			if c != nil {
				c.close()
			}
			return
		}
	fill:
		for len(batch) < MaxBatch {
			select {
			case r := <-s.reqs:
				batch = append(batch, r)
			default:
				break fill
			}
		}
		s.answer(batch, c, err)
	}
}

// answer runs batch in one transaction, or fails it with the error that kept
// the committer from starting.
func (s *Store) answer(batch []*request, c *committer, startErr error) {
	if startErr != nil {
		for _, r := range batch {
			r.err = unavailable(startErr)
			close(r.done)
		}
		return
	}
	c.run(batch)
	for _, r := range batch {
		close(r.done)
	}
}

func (s *Store) newCommitter(ctx context.Context) (*committer, error) {
	conn, err := s.wdb.Conn(ctx)
	if err != nil {
		return nil, err
	}
	c := &committer{
		conn:  conn,
		stmts: stmtCache{conn: conn, stmts: map[string]*sql.Stmt{}},
		usage: map[string]*usage{},
		mem:   newMemTable(),
		batch: newOverlay(),
	}
	c.tx = &writeTx{readTx: readTx{q: &c.stmts}, c: c, delta: map[string]usage{}, op: newOverlay(), batch: c.batch}
	if err := c.countUsage(ctx); err != nil {
		conn.Close()
		return nil, err
	}
	if err := c.mem.load(ctx, conn); err != nil {
		conn.Close()
		return nil, err
	}
	return c, nil
}

func (c *committer) close() {
	c.stmts.close()
	c.conn.Close()
}

func (c *committer) countUsage(ctx context.Context) error {
	for _, q := range []struct {
		sql   string
		field func(*usage) *int64
	}{
		{`SELECT tenant, count(*) FROM leases GROUP BY tenant`, func(u *usage) *int64 { return &u.leases }},
		{`SELECT tenant, count(*) FROM waiters GROUP BY tenant`, func(u *usage) *int64 { return &u.waiters }},
	} {
		rows, err := c.conn.QueryContext(ctx, q.sql)
		if err != nil {
			return err
		}
		for rows.Next() {
			var tenant string
			var n int64
			if err := rows.Scan(&tenant, &n); err != nil {
				rows.Close()
				return err
			}
			*q.field(c.tenantUsage(tenant)) = n
		}
		if err := rows.Close(); err != nil {
			return err
		}
	}
	return nil
}

func (c *committer) tenantUsage(t string) *usage {
	u := c.usage[t]
	if u == nil {
		u = &usage{}
		c.usage[t] = u
	}
	return u
}

// run executes batch as one transaction. Each request gets a savepoint, so
// an fn that fails undoes only its own writes. If the commit itself fails,
// every request that had succeeded fails with unavailable.
func (c *committer) run(batch []*request) {
	ctx := context.Background()
	if err := c.exec(ctx, `BEGIN IMMEDIATE`); err != nil {
		for _, r := range batch {
			r.err = unavailable(err)
		}
		return
	}
	tx := c.tx
	tx.now = time.Now()
	c.batch.reset()
	committed := map[string]usage{}
	for _, r := range batch {
		if err := r.ctx.Err(); err != nil {
			r.err = context.Cause(r.ctx)
			continue
		}
		tx.begin()
		if r.err = r.fn(tx); r.err != nil {
			if tx.savepoint {
				if err := c.exec(ctx, `ROLLBACK TO op`); err != nil {
					// The batch cannot be trusted any more.
					c.fail(batch, err)
					return
				}
			}
			continue
		}
		c.batch.merge(tx.op)
		for t, d := range tx.delta {
			u := committed[t]
			u.leases += d.leases
			u.waiters += d.waiters
			committed[t] = u
		}
	}
	if err := c.exec(ctx, `COMMIT`); err != nil {
		c.fail(batch, err)
		return
	}
	for _, s := range c.batch.locks {
		c.mem.put(s)
	}
	for t, d := range committed {
		u := c.tenantUsage(t)
		u.leases += d.leases
		u.waiters += d.waiters
	}
}

// fail rolls the batch back and fails every request that had succeeded.
func (c *committer) fail(batch []*request, err error) {
	_ = c.exec(context.Background(), `ROLLBACK`)
	for _, r := range batch {
		if r.err == nil {
			r.err = unavailable(err)
		}
	}
}

func (c *committer) exec(ctx context.Context, query string) error {
	_, err := c.stmts.ExecContext(ctx, query)
	return err
}

// stmtCache prepares each statement once on the write connection.
type stmtCache struct {
	conn  *sql.Conn
	stmts map[string]*sql.Stmt
}

func (sc *stmtCache) stmt(ctx context.Context, query string) (*sql.Stmt, error) {
	if st, ok := sc.stmts[query]; ok {
		return st, nil
	}
	st, err := sc.conn.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	sc.stmts[query] = st
	return st, nil
}

func (sc *stmtCache) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	st, err := sc.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	return st.ExecContext(ctx, args...)
}

func (sc *stmtCache) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	st, err := sc.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	return st.QueryContext(ctx, args...)
}

func (sc *stmtCache) close() {
	for _, st := range sc.stmts {
		st.Close()
	}
}
