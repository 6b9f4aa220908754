package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Event IDs.
//
// A transaction cannot take its events' IDs from a sequence: IDs would be
// handed out before commit and transactions commit out of order, so a reader
// could read ID 8 and only later see ID 7 appear. Taking them from one
// counter row inside the transaction would serialise every commit, fsync
// included, behind that row.
//
// Instead writers insert events with a NULL id, and committed events are
// numbered afterwards by short numbering transactions: each holds a
// transaction-scoped advisory lock, gives every committed event still
// unnumbered the next IDs in insertion order, and commits. Numbering
// transactions follow one another, so each one's IDs are above every ID
// already visible, and readers, who read only numbered rows, never see an ID
// appear below one they have read. The rows of one transaction are numbered
// in the order they were written; transactions on one lock commit one after
// the other under its row lock, so their events are numbered in that order.
//
// Whoever wrote events numbers them before its Update returns, so that its
// events are readable by then (history and "watch from now" rely on that, as
// on SQLite). Just before its COMMIT, in the same round trip, the writer
// tries the lock without waiting. If it gets it, nobody else is numbering:
// it numbers everything pending, its own events included, and its commit is
// also the numbering's (one WAL flush for both). If another transaction
// holds the lock, that one is numbering right now; the writer commits, waits
// for it to finish (a shared lock on the same key), tries again in a
// numbering transaction of its own, and so on until its events are numbered.
// Under load, then, one numbering transaction, one WAL flush, serves every
// event committed while the previous one flushed: numbering never caps
// throughput at one commit per flush.
//
// If the writer's connection fails between its COMMIT and the numbering, the
// Update still succeeded; every instance also runs a numbering pass every
// numberEvery, which numbers such stragglers.
const (
	numberEvery = time.Second
	// numberBatch bounds one numbering transaction.
	numberBatch = 10000
	// numberTries bounds how often a writer waits for someone else's
	// numbering and tries again; two suffice unless numbering fails.
	numberTries = 10
)

// queueNumbering queues a numbering transaction into b: see queueNumber.
func (s *Store) queueNumbering(b *pgx.Batch, wait bool, left *int64) {
	b.Queue(`BEGIN`)
	s.queueNumber(b, wait, left)
	b.Queue(`COMMIT`)
}

// queueNumber queues the numbering statements into b, to run in a
// transaction. With wait, they wait for the lock; without, they number only
// if the lock is free. If left is not nil, they store into it how many
// events up to the session's last written one (dlm.last_seq) are still
// unnumbered.
func (s *Store) queueNumber(b *pgx.Batch, wait bool, left *int64) {
	if wait {
		b.Queue(`SELECT set_config('dlm.numbering', 'true', true), pg_advisory_xact_lock($1)`, lockKey("number", s.schema))
	} else {
		b.Queue(`SELECT set_config('dlm.numbering', pg_try_advisory_xact_lock($1)::text, true)`, lockKey("number", s.schema))
	}
	// This statement takes its snapshot after the lock is granted, so it
	// sees every numbering transaction before it.
	// It also counts the events up to the session's last written one that
	// stay unnumbered: those pending in its snapshot, less those it numbers
	// (the outer query does not see the CTE's updates).
	qq := b.Queue(`WITH c AS (SELECT last FROM event_counter),
		p AS (SELECT seq, row_number() OVER (ORDER BY seq) AS rn FROM (
			SELECT seq FROM events WHERE id IS NULL AND current_setting('dlm.numbering') = 'true'
			ORDER BY seq LIMIT $1) pending),
		u AS (UPDATE events e SET id = c.last + p.rn FROM p, c WHERE e.seq = p.seq RETURNING e.id, e.seq),
		last AS (UPDATE event_counter SET last = (SELECT max(id) FROM u) WHERE EXISTS (SELECT FROM u)),
		mine AS (SELECT coalesce(nullif(current_setting('dlm.last_seq', true), ''), '0')::bigint AS seq)
		SELECT (SELECT count(*) FROM events, mine WHERE events.id IS NULL AND events.seq <= mine.seq)
			- (SELECT count(*) FROM u, mine WHERE u.seq <= mine.seq)`, numberBatch)
	if left != nil {
		qq.QueryRow(func(r pgx.Row) error { return r.Scan(left) })
	}
}

// awaitNumbering waits on conn until the events this session wrote are
// numbered: it waits for the numbering in progress to end and numbers
// whatever is still pending itself, if nobody else does first.
func (s *Store) awaitNumbering(ctx context.Context, conn *pgx.Conn, left int64) error {
	for try := 0; left > 0; try++ {
		if try == numberTries {
			return fmt.Errorf("%d events still unnumbered after %d tries", left, try)
		}
		b := &pgx.Batch{}
		b.Queue(`BEGIN`)
		b.Queue(`SELECT pg_advisory_xact_lock_shared($1)`, lockKey("number", s.schema))
		b.Queue(`COMMIT`)
		s.queueNumbering(b, false, &left)
		if err := conn.SendBatch(ctx, b).Close(); err != nil {
			return err
		}
	}
	return nil
}

// numberLoop numbers stragglers every numberEvery until Close.
func (s *Store) numberLoop() {
	ctx, cancel := s.quitContext()
	defer cancel()
	tick := time.NewTicker(numberEvery)
	defer tick.Stop()
	for {
		select {
		case <-s.quit:
			return
		case <-tick.C:
		}
		if err := s.numberPass(ctx); err != nil && ctx.Err() == nil {
			s.log.Debug("dlm: numbering events failed", "err", err)
		}
	}
}

func (s *Store) numberPass(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.opts.OpTimeout)
	defer cancel()
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	b := &pgx.Batch{}
	s.queueNumbering(b, true, nil)
	return conn.SendBatch(ctx, b).Close()
}

// quitContext returns a context cancelled by Close.
func (s *Store) quitContext() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		select {
		case <-s.quit:
		case <-ctx.Done():
		}
		cancel()
	}()
	return ctx, cancel
}
