package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"sync/atomic"
	"time"
)

// committer is the state of the single write connection.
type committer struct {
	conn    *sql.Conn
	stmts   stmtCache
	journal *journal
	files   []string // the database and its SQLite log, to fsync
	// usage counts each tenant's stored leases and waiters, so that the
	// per-tenant caps cost no query. Only the committer touches it.
	usage map[string]usage
	mem   *memTable
	batch *overlay
	tx    *writeTx

	args     []any                // reused argument list for flush
	expanded map[expansion]string // multi-row statements by size
	record   []byte               // reused journal record
	// lastEvent is the last event ID committed: IDs are given out by the
	// committer, in commit order, and never reused even after pruning.
	lastEvent int64
	// broken is set when durability can no longer be vouched for (a failed
	// fsync or a failed commit after the journal took the batch). Every
	// later Update fails with it; a restart recovers from the journal.
	broken error
	// inflight is the Store's mark of the batch in flight (Store.readNow).
	inflight *atomic.Int64
	// observe holds the Store's commit observer (Store.ObserveCommits).
	observe *atomic.Pointer[func(ops int, d time.Duration)]
}

type usage struct{ leases, waiters int64 }

// commitLoop takes whatever Updates are queued, runs them in one
// transaction, commits once and answers them all; then the next queue.
// While a commit is in flight new Updates queue up, so the batch grows with
// the load and one fsync serves many operations.
func (s *Store) commitLoop(c *committer) {
	defer close(s.stopped)
	defer c.close()
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
					batch = append(batch, r)
					continue
				default:
				}
				break
			}
			if len(batch) > 0 {
				c.answer(batch)
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
		c.answer(batch)
	}
}

// answer runs batch and wakes its Updates.
func (c *committer) answer(batch []*request) {
	if c.broken != nil {
		for _, r := range batch {
			r.err = unavailable(c.broken)
		}
	} else {
		c.run(batch)
	}
	for _, r := range batch {
		close(r.done)
	}
}

// newCommitter takes the write connection, brings the file up to date with
// the journal, and loads the live locks.
func newCommitter(ctx context.Context, wdb *sql.DB, path string) (*committer, error) {
	conn, err := wdb.Conn(ctx)
	if err != nil {
		return nil, err
	}
	c := &committer{
		conn:  conn,
		stmts: stmtCache{conn: conn, stmts: map[string]*sql.Stmt{}},
		files: []string{path, path + "-wal"},
		usage: map[string]usage{},
		mem:   newMemTable(),
		batch: newOverlay(),

		expanded: map[expansion]string{},
	}
	c.tx = &writeTx{readTx: readTx{q: &c.stmts}, c: c, op: newOverlay(), batch: c.batch}
	if err = c.recover(ctx, path+".commitlog"); err == nil {
		// The requests that waited died with the process that queued them.
		_, err = conn.ExecContext(ctx, `DELETE FROM waiters`)
	}
	if err == nil {
		err = conn.QueryRowContext(ctx, `SELECT max(
			coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0),
			coalesce((SELECT max(id) FROM events), 0))`).Scan(&c.lastEvent)
	}
	if err == nil {
		err = c.countUsage(ctx)
	}
	if err == nil {
		err = c.mem.load(ctx, conn)
	}
	if err != nil {
		c.close()
		return nil, err
	}
	return c, nil
}

// recover opens the journal and writes the batches it holds into the
// database again (their SQLite commits may not have reached the disk), then
// syncs the database and starts the journal over.
func (c *committer) recover(ctx context.Context, path string) error {
	j, records, err := openJournal(path)
	if err != nil {
		return err
	}
	c.journal = j
	if len(records) > 0 {
		o := newOverlay()
		for _, p := range records {
			if err := decodeRecord(p, o); err != nil {
				return fmt.Errorf("journal %s: %w", path, err)
			}
		}
		if err := c.exec(ctx, `BEGIN IMMEDIATE`); err != nil {
			return err
		}
		if err := c.flush(ctx, o); err != nil {
			_ = c.exec(ctx, `ROLLBACK`)
			return err
		}
		if err := c.exec(ctx, `COMMIT`); err != nil {
			return err
		}
	}
	return c.checkpoint()
}

// checkpoint makes everything SQLite has committed durable, so that the
// journal can forget it, and starts the journal over.
func (c *committer) checkpoint() error {
	if err := syncFiles(c.files...); err != nil {
		return err
	}
	return c.journal.reset()
}

func (c *committer) close() {
	c.stmts.close()
	c.conn.Close()
	if c.journal != nil {
		c.journal.close()
	}
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
			u := c.usage[tenant]
			*q.field(&u) = n
			c.usage[tenant] = u
		}
		if err := rows.Close(); err != nil {
			return err
		}
	}
	return nil
}

// run executes batch as one transaction: each Update's fn decides on the
// in-memory state, flush writes what they all saved while the journal makes
// the batch durable, and then SQLite commits it. An fn that fails leaves nothing
// behind: its saves are dropped and its rare direct writes rolled back to
// its savepoint.
func (c *committer) run(batch []*request) {
	start := time.Now()
	ctx := context.Background()
	if err := c.exec(ctx, `BEGIN IMMEDIATE`); err != nil {
		for _, r := range batch {
			r.err = unavailable(err)
		}
		return
	}
	tx := c.tx
	// Readers judge expiry no later than this batch's now until it has
	// committed (Store.readNow); mark the batch before taking its now, so
	// that no read can take a later now unnoticed.
	c.inflight.Store(inflightTaking)
	tx.now = time.Now()
	c.inflight.Store(tx.now.UnixNano())
	defer c.inflight.Store(0)
	tx.lastEvent = c.lastEvent
	c.batch.reset()
	direct := false // a direct write, which the journal does not record
	for _, r := range batch {
		if err := r.ctx.Err(); err != nil {
			r.err = context.Cause(r.ctx)
			continue
		}
		tx.begin()
		lastEvent := tx.lastEvent
		if r.err = r.fn(tx); r.err != nil {
			tx.lastEvent = lastEvent
			if tx.savepoint {
				if err := c.exec(ctx, `ROLLBACK TO op`); err != nil {
					// The batch cannot be trusted any more.
					c.fail(batch, err)
					return
				}
			}
			continue
		}
		direct = direct || tx.direct
		c.batch.merge(tx.op)
	}
	// The journal's fdatasync runs while SQLite takes the same rows, and
	// SQLite commits only once the journal holds them: the fsync costs
	// the batch little, and nothing is visible before it is durable.
	c.record = encodeRecord(c.record, c.batch)
	journaled := make(chan error, 1)
	go func() { journaled <- c.durable() }()
	flushErr := c.flush(ctx, c.batch)
	if err := <-journaled; err != nil {
		c.broken = fmt.Errorf("journal: %w", err)
		c.fail(batch, c.broken)
		return
	}
	if flushErr != nil {
		// The journal has the batch, so a restart would apply it: say
		// nothing definite about it until then.
		c.broken = fmt.Errorf("writing a journaled batch: %w", flushErr)
		c.fail(batch, c.broken)
		return
	}
	if err := c.exec(ctx, `COMMIT`); err != nil {
		c.broken = fmt.Errorf("commit after journaling: %w", err)
		c.fail(batch, c.broken)
		return
	}
	if direct {
		if err := c.checkpoint(); err != nil {
			c.broken = fmt.Errorf("sync: %w", err)
			c.fail(batch, c.broken)
			return
		}
	}
	c.lastEvent = tx.lastEvent
	for _, s := range c.batch.locks {
		c.mem.put(s)
	}
	for t, d := range c.batch.usage {
		u := c.usage[t]
		u.leases += d.leases
		u.waiters += d.waiters
		c.usage[t] = u
	}
	if c.observe != nil {
		if f := c.observe.Load(); f != nil {
			(*f)(len(batch), time.Since(start))
		}
	}
}

// durable appends the batch's record to the journal, starting the journal
// over first if the record does not fit.
func (c *committer) durable() error {
	if !c.journal.fits(len(c.record)) {
		if err := c.checkpoint(); err != nil {
			return err
		}
		if !c.journal.fits(len(c.record)) {
			return fmt.Errorf("a record of %d bytes is larger than the journal", len(c.record))
		}
	}
	return c.journal.append(c.record)
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
