package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"time"

	"github.com/dlmhq/dlm"
)

// committer is the writer's state: the live locks in memory, the journals
// that make each batch durable, and the applier (applyLoop) that writes the
// batches into the file after they are acknowledged. One batch at a time
// uses it (Store.mu).
type committer struct {
	w      *writer   // the write connection: the applier's, but see direct
	rconn  *sql.Conn // reads of the committed file on the hot path
	rstmts stmtCache
	// journals: records go to journals[active]; the other one is empty,
	// or retiring (the applier will sync SQLite and reset it).
	journals [2]*journal
	active   int
	retiring bool
	retired  chan struct{} // the applier finished retiring a journal
	nextGen  uint64        // the last journal generation given out
	files    []string      // the database and its SQLite log, to fsync
	// usage counts each tenant's stored leases and waiters, so that the
	// per-tenant caps cost no query.
	usage map[string]usage
	mem   *memTable
	known *keyFilter // every lock that has a row in the file (see token)

	record []byte // reused journal record
	// lastEvent is the last event ID committed: IDs are given out by the
	// committer, in commit order, and never reused even after pruning.
	lastEvent int64
	// broken is set when durability can no longer be vouched for (a failed
	// fsync, or a journaled batch that could not be written to the file).
	// Every later batch fails with it; a restart recovers from the journal.
	broken error

	seq         int64     // the last batch committed
	lazy        []applied // journaled but not yet synced: see syncLazy
	pending     []applied // handed to the applier, maybe not yet in the file, oldest first
	free        []*overlay
	applyQueue  chan applied
	applierDone chan struct{}
	progress    *progress
}

type usage struct{ leases, waiters int64 }

// restartEvery is how often a broken committer is replaced while it stays
// broken: often enough to come back within a second or two of the disk
// having room again, rarely enough not to grind a failing disk.
const restartEvery = time.Second

// restart replaces c with a new committer if c broke and restartEvery has
// passed since the last try; otherwise it returns c. The new committer
// recovers from the journals what the broken one had made durable, so
// nothing acknowledged is lost; waiters queued before are dropped, as on a
// restart of the process.
func (s *Store) restart(c *committer) *committer {
	err := c.broken
	if err == nil {
		err = c.progress.failed()
	}
	if err == nil || time.Since(s.restarted) < restartEvery {
		return c
	}
	s.restarted = time.Now()
	c.stopApplier()
	c.close()
	nc, err2 := s.newCommitter()
	if err2 != nil {
		if held, ok := s.logs.Allow("the store stays unavailable", time.Now()); ok {
			s.log.Warn("the store stays unavailable", "err", err, "restart", err2, "held_back", held)
		}
		return s.deadCommitter(fmt.Errorf("%w (restart: %w)", err, err2))
	}
	s.log.Info("the store recovered", "after", err)
	return nc
}

// deadCommitter fails every batch and every read with err, until the next
// restart.
func (s *Store) deadCommitter(err error) *committer {
	c := &committer{
		broken:      err,
		applyQueue:  make(chan applied),
		applierDone: make(chan struct{}),
		progress:    newProgress(),
	}
	close(c.applierDone)
	c.progress.fail(err)
	s.progress.Store(c.progress)
	return c
}

// newCommitter takes the write connection and a read connection, brings the
// file up to date with the journal, loads the live locks and starts the
// applier.
func newCommitter(ctx context.Context, wdb, rdb *sql.DB, path string, opts Options) (*committer, error) {
	conn, err := wdb.Conn(ctx)
	if err != nil {
		return nil, err
	}
	c := &committer{
		w:           newWriter(conn),
		files:       []string{path, path + "-wal"},
		usage:       map[string]usage{},
		mem:         newMemTable(),
		known:       newKeyFilter(),
		applyQueue:  make(chan applied, unappliedMax),
		applierDone: make(chan struct{}),
		retired:     make(chan struct{}, 1),
		progress:    newProgress(),
	}
	if c.rconn, err = rdb.Conn(ctx); err == nil {
		c.rstmts = stmtCache{conn: c.rconn, stmts: map[string]*sql.Stmt{}}
		err = c.recover(ctx, opts, journalPaths(path)...)
	}
	if err == nil {
		// The requests that waited died with the process that queued them.
		_, err = conn.ExecContext(ctx, `DELETE FROM waiters`)
	}
	if err == nil {
		err = conn.QueryRowContext(ctx, `SELECT max(
			coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0),
			coalesce((SELECT max(id) FROM events), 0))`).Scan(&c.lastEvent)
	}
	if err == nil {
		err = c.loadKnown(ctx)
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
	go c.applyLoop()
	return c, nil
}

// recover opens the journals and writes the batches they hold into the
// database again (their SQLite commits may not have reached the disk), then
// syncs the database and starts both journals over.
//
// The database's user_version records that its journals exist, so that a
// journal deleted or blanked since is refused rather than taken for a new
// one (unless opts.AcceptDataLoss).
func (c *committer) recover(ctx context.Context, opts Options, paths ...string) error {
	var hasJournals int
	if err := c.w.conn.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&hasJournals); err != nil {
		return err
	}
	var found [][][]byte // each journal's records
	for i, path := range paths {
		j, records, err := openJournal(path, opts.JournalSize, opts.AcceptDataLoss)
		if err != nil {
			return err
		}
		c.journals[i] = j
		if j.blank && hasJournals > 0 && !opts.AcceptDataLoss {
			return &DamageError{File: path, Problem: "the journal is missing or blank, but the database says it was written"}
		}
		c.nextGen = max(c.nextGen, j.generation)
		found = append(found, records)
	}
	// One overlay takes every record: flush writes each table's inserts
	// before its updates and deletes. A lock's lock-delay is as the last
	// batch left it, so records are read oldest first: the journal that
	// took over from the other has the higher generation.
	o := newOverlay()
	order := []int{0, 1}
	if c.journals[1].generation < c.journals[0].generation {
		order = []int{1, 0}
	}
	for _, i := range order {
		for _, p := range found[i] {
			if err := decodeRecord(p, o); err != nil {
				return fmt.Errorf("journal %s: %w", paths[i], err)
			}
		}
	}
	if !o.empty() {
		if err := c.w.apply([]applied{{o: o}}, false); err != nil {
			return err
		}
	}
	if hasJournals == 0 {
		if _, err := c.w.conn.ExecContext(ctx, `PRAGMA user_version = 1`); err != nil {
			return err
		}
	}
	if err := c.checkpoint(); err != nil {
		return err
	}
	return c.journals[1-c.active].reset(c.newGen())
}

func (c *committer) newGen() uint64 {
	c.nextGen++
	return c.nextGen
}

// checkpoint makes everything SQLite has committed durable, so that the
// active journal can forget it, and starts that journal over. The file must
// hold every batch the journal does: the applier must be idle.
func (c *committer) checkpoint() error {
	if err := syncFiles(c.files...); err != nil {
		return err
	}
	return c.journals[c.active].reset(c.newGen())
}

// rotate makes the other journal the active one, and has the applier
// retire the full one after the last batch it holds (applyLoop). It waits
// only if the retirement of the other journal, from the last rotation, is
// still running.
func (c *committer) rotate() error {
	// Lazy batches are in the full journal: they are handed over (and
	// queued before the retirement) now.
	if err := c.syncLazy(); err != nil {
		return err
	}
	if c.retiring {
		<-c.retired
		c.retiring = false
	}
	if err := c.progress.failed(); err != nil {
		return err
	}
	full := c.journals[c.active]
	c.active = 1 - c.active
	c.retiring = true
	c.applyQueue <- applied{retire: full, gen: c.newGen()}
	return nil
}

// stopApplier lets the applier write what it was handed, and waits for it.
func (c *committer) stopApplier() {
	close(c.applyQueue)
	<-c.applierDone
}

func (c *committer) close() {
	if c.w == nil {
		return // a dead committer (see deadCommitter)
	}
	c.w.close()
	if c.rconn != nil {
		c.rstmts.close()
		c.rconn.Close()
	}
	for _, j := range c.journals {
		if j != nil {
			j.close()
		}
	}
}

// loadKnown fills the key filter with every lock in the file.
func (c *committer) loadKnown(ctx context.Context) error {
	rows, err := c.w.conn.QueryContext(ctx, `SELECT ns, name FROM locks`)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var k dlm.Key
		if err := rows.Scan(&k.Namespace, &k.Name); err != nil {
			return err
		}
		c.known.add(k)
	}
	return rows.Err()
}

func (c *committer) countUsage(ctx context.Context) error {
	for _, q := range []struct {
		sql   string
		field func(*usage) *int64
	}{
		{`SELECT tenant, count(*) FROM leases GROUP BY tenant`, func(u *usage) *int64 { return &u.leases }},
		{`SELECT tenant, count(*) FROM waiters GROUP BY tenant`, func(u *usage) *int64 { return &u.waiters }},
	} {
		rows, err := c.w.conn.QueryContext(ctx, q.sql)
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

// handOver queues durable batches for the applier.
func (c *committer) handOver(batches []applied) {
	for _, b := range batches {
		if b.o != nil {
			c.pending = append(c.pending, b)
		}
		c.applyQueue <- b
	}
}

// syncLazy makes the lazy batches durable and hands them over. A batch that
// only queued or dequeued waiters acknowledges nothing that must survive a
// crash (waiters die with the process that queued them), so it is answered
// once journaled, without an fdatasync of its own: the next batch's, or
// lazyDelay's timer, covers it. In a contended handoff, the new request
// queued by the last holder then shares the fdatasync of the release that
// grants the next waiter. Lazy batches stay out of the file, and their
// events out of sight, until they are durable.
func (c *committer) syncLazy() error {
	if len(c.lazy) == 0 {
		return nil
	}
	if err := c.journals[c.active].sync(); err != nil {
		c.broken = fmt.Errorf("journal: %w", err)
		return c.broken
	}
	c.handOver(c.lazy)
	c.lazy = c.lazy[:0]
	return nil
}

// durable writes the batch's record to the active journal and, unless
// lazy, fdatasyncs it (and with it every lazy record before it). If the
// record does not fit, the other journal takes over first (rotate).
func (c *committer) durable(lazy bool) error {
	if !c.journals[c.active].fits(len(c.record)) {
		if err := c.rotate(); err != nil {
			return err
		}
		if !c.journals[c.active].fits(len(c.record)) {
			return fmt.Errorf("a record of %d bytes is larger than the journal", len(c.record))
		}
	}
	j := c.journals[c.active]
	if err := j.write(c.record); err != nil {
		return err
	}
	if lazy {
		return nil
	}
	return j.sync()
}

// forgetApplied drops the pending batches the file now holds, keeping
// their overlays for reuse.
func (c *committer) forgetApplied() {
	done := c.progress.applied.Load()
	n := 0
	for n < len(c.pending) && c.pending[n].seq <= done {
		c.pending[n].o.reset()
		c.free = append(c.free, c.pending[n].o)
		n++
	}
	c.pending = slices.Delete(c.pending, 0, n)
}

func (c *committer) newOverlay() *overlay {
	if n := len(c.free); n > 0 {
		o := c.free[n-1]
		c.free = c.free[:n-1]
		return o
	}
	return newOverlay()
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
