package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/dlmhq/dlm"
)

// committer is the state of the goroutine that decides and journals every
// batch. The applier (applyLoop) writes the batches into the file after
// they are acknowledged.
type committer struct {
	w *writer // the write connection: the applier's, unless taken
	// taken is set while the committer holds the write connection in a
	// transaction of its own, for a batch that reads or writes the file
	// directly (see take).
	taken  bool
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
	// per-tenant caps cost no query. Only the committer touches it.
	usage map[string]usage
	mem   *memTable
	known *keyFilter // every lock that has a row in the file (see LoadLock)
	batch *overlay
	tx    *writeTx

	record []byte // reused journal record
	// lastEvent is the last event ID committed: IDs are given out by the
	// committer, in commit order, and never reused even after pruning.
	lastEvent int64
	// broken is set when durability can no longer be vouched for (a failed
	// fsync, or a journaled batch that could not be written to the file).
	// Every later Update fails with it; a restart recovers from the journal.
	broken error

	seq         int64     // the last batch decided
	lazy        []applied // journaled but not yet synced: see syncLazy
	pending     []applied // handed to the applier, maybe not yet in the file, oldest first
	free        []*overlay
	applyQueue  chan applied
	applierDone chan struct{}
	progress    *progress
	// observe holds the Store's commit observer (Store.ObserveCommits).
	observe *atomic.Pointer[func(ops int, d time.Duration)]
}

type usage struct{ leases, waiters int64 }

// commitLoop takes whatever Updates are queued, runs them in one
// transaction, commits once and answers them all; then the next queue.
// While a commit is in flight new Updates queue up, so the batch grows with
// the load and one fsync serves many operations.
//
// A committer that broke (a full disk, a failed fsync) answers unavailable
// until the loop replaces it with a new one (see restart), which recovers
// from the journals as a restarted process would.
func (s *Store) commitLoop(c *committer) {
	defer close(s.stopped)
	defer func() { c.close() }()
	defer func() { c.stopApplier() }()
	batch := make([]*request, 0, MaxBatch)
	lazy := time.NewTimer(lazyDelay)
	lazy.Stop()
	retry := time.NewTicker(restartEvery)
	defer retry.Stop()
	for {
		batch = batch[:0]
		select {
		case r := <-s.reqs:
			batch = append(batch, r)
		case <-lazy.C:
			c.syncLazy()
			continue
		case <-retry.C:
			c = s.restart(c)
			continue
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
			c.syncLazy()
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
		c = s.restart(c)
		c.answer(batch)
		if len(c.lazy) == 1 {
			lazy.Reset(lazyDelay)
		}
	}
}

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

// deadCommitter answers every Update with err and fails every read, until
// the next restart.
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

// lazyDelay bounds how long a batch that only queued waiters waits for a
// later batch's fdatasync to make it durable (see syncLazy).
const lazyDelay = time.Millisecond

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
		batch:       newOverlay(),
		applyQueue:  make(chan applied, unappliedMax),
		applierDone: make(chan struct{}),
		retired:     make(chan struct{}, 1),
		progress:    newProgress(),
	}
	c.tx = &writeTx{readTx: readTx{q: takingQuerier{c}}, c: c, op: newOverlay(), batch: c.batch}
	if c.rconn, err = rdb.Conn(ctx); err == nil {
		c.rstmts = stmtCache{conn: c.rconn, stmts: map[string]*sql.Stmt{}}
		c.tx.file.q = &c.rstmts
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
	// before its updates and deletes, so the order of the journals does
	// not matter.
	o := newOverlay()
	for i := range found {
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
	c.w.stmts.close()
	c.w.conn.Close()
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

// run decides batch and makes it durable: each Update's fn decides on the
// in-memory state, the journal takes what they all saved in one fdatasync,
// and the batch is handed to the applier. An fn that fails leaves nothing
// behind: its saves are dropped and its rare direct writes rolled back to
// its savepoint.
func (c *committer) run(batch []*request) {
	start := time.Now()
	ctx := context.Background()
	seq := c.seq + 1
	// Keep the applier within reach: readers need the now of every batch
	// not yet in the file (progress.readNow).
	if c.progress.applied.Load() < seq-unappliedMax {
		if err := c.syncLazy(); err != nil {
			c.fail(batch, err)
			return
		}
	}
	if err := c.progress.wait(ctx, seq-unappliedMax); err != nil {
		c.fail(batch, err)
		return
	}
	c.forgetApplied()
	tx := c.tx
	tx.now = c.progress.decide(seq)
	tx.file.now = tx.now
	tx.lastEvent = c.lastEvent
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
				if err := c.w.exec(ctx, `ROLLBACK TO op`); err != nil {
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
	changed := !c.batch.empty()
	lazy := changed && !c.taken && c.batch.onlyWaiters()
	switch {
	case c.taken:
		if err := c.commitTaken(direct); err != nil {
			c.broken = err
			c.fail(batch, err)
			return
		}
	case changed:
		c.record = encodeRecord(c.record, c.batch)
		if err := c.durable(lazy); err != nil {
			c.broken = fmt.Errorf("journal: %w", err)
			c.fail(batch, c.broken)
			return
		}
	}
	c.lastEvent = tx.lastEvent
	for k := range c.batch.tokens {
		c.known.add(k)
	}
	for _, s := range c.batch.locks {
		c.mem.put(s)
	}
	for t, d := range c.batch.usage {
		u := c.usage[t]
		u.leases += d.leases
		u.waiters += d.waiters
		c.usage[t] = u
	}
	c.seq = seq
	switch {
	case c.taken:
		// The file has the batch already, and the applier is idle.
		c.taken = false
		c.batch.reset()
		c.progress.advance(seq)
	case lazy:
		c.lazy = append(c.lazy, applied{seq: seq, o: c.batch})
		c.batch = c.newOverlay()
		tx.batch = c.batch
	case changed:
		// The fdatasync made the lazy batches before it durable too.
		c.handOver(append(c.lazy, applied{seq: seq, o: c.batch}))
		c.lazy = c.lazy[:0]
		c.batch = c.newOverlay()
		tx.batch = c.batch
	case len(c.lazy) > 0:
		// Nothing to write, but it must not reach the file before them.
		c.lazy = append(c.lazy, applied{seq: seq})
	default:
		c.handOver([]applied{{seq: seq}})
	}
	// Reads from now on must see this batch: they wait for the applier to
	// write it, and so for a lazy batch's fdatasync too.
	c.progress.answered.Store(seq)
	if c.observe != nil {
		if f := c.observe.Load(); f != nil {
			(*f)(len(batch), time.Since(start))
		}
	}
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

// take gives the committer the write connection for the rest of the batch,
// in a transaction: the batch reads or writes the file directly (tenants,
// keys, pruning). It waits for the applier to write every earlier batch, so
// that the file is current.
func (c *committer) take(ctx context.Context) error {
	if c.taken {
		return nil
	}
	if err := c.syncLazy(); err != nil {
		return err
	}
	if err := c.progress.wait(ctx, c.seq); err != nil {
		return err
	}
	if err := c.w.exec(ctx, `BEGIN IMMEDIATE`); err != nil {
		return unavailable(err)
	}
	c.taken = true
	return nil
}

// commitTaken finishes a batch that took the write connection: its saved
// rows join its direct writes, the journal takes them while SQLite does,
// and SQLite commits once the journal holds them. Direct writes are not in
// the journal, so a batch with any is synced to the disk.
func (c *committer) commitTaken(direct bool) error {
	ctx := context.Background()
	c.record = encodeRecord(c.record, c.batch)
	journaled := make(chan error, 1)
	go func() { journaled <- c.durable(false) }()
	c.w.rows.gather([]applied{{o: c.batch}}, true)
	flushErr := c.w.flush(ctx, &c.w.rows)
	if err := <-journaled; err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	if flushErr != nil {
		// The journal has the batch, so a restart would apply it: say
		// nothing definite about it until then.
		return fmt.Errorf("writing a journaled batch: %w", flushErr)
	}
	if err := c.w.exec(ctx, `COMMIT`); err != nil {
		return fmt.Errorf("commit after journaling: %w", err)
	}
	if direct {
		if err := c.checkpoint(); err != nil {
			return fmt.Errorf("sync: %w", err)
		}
	}
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

// fail fails every request of the batch that had succeeded, rolls back a
// transaction of its own and drops what the batch saved.
func (c *committer) fail(batch []*request, err error) {
	if c.taken {
		_ = c.w.exec(context.Background(), `ROLLBACK`)
		c.taken = false
	}
	c.batch.reset()
	for _, r := range batch {
		if r.err == nil {
			r.err = unavailable(err)
		}
	}
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
