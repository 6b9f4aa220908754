package postgres

import (
	"context"
	"sync"
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
// An Update's events are numbered before it returns, so that they are
// readable by then (history and "watch from now" rely on that, as on
// SQLite). Just before its COMMIT, in the same round trip, the writer tries
// the lock without waiting. If it gets it, nobody else is numbering: it
// numbers everything pending, its own events included, and its commit is
// also the numbering's (one WAL flush for both). If another transaction
// holds the lock, the writer commits, gives its connection back and asks its
// instance's numberer for a round: a numbering transaction that waits for
// the lock and numbers everything pending then, the events of every writer
// that asked meanwhile included. Under load, then, one numbering
// transaction, one WAL flush, serves every event committed while the
// previous one flushed: numbering never caps throughput at one commit per
// flush.
//
// If the writer's connection fails between its COMMIT and the numbering, the
// Update still succeeded; every instance also runs a numbering pass every
// numberEvery, which numbers such stragglers.
const (
	numberEvery = time.Second
	// numberBatch bounds one numbering transaction.
	numberBatch = 10000
)

// queueNumbering queues a numbering transaction into b: see queueNumber.
func (s *Store) queueNumbering(b *pgx.Batch, wait bool, numbered, left *int64) {
	b.Queue(`BEGIN`)
	s.queueNumber(b, wait, numbered, left)
	b.Queue(`COMMIT`)
}

// queueNumber queues the numbering statements into b, to run in a
// transaction. With wait, they wait for the lock; without, they number only
// if the lock is free. They store into numbered how many events they
// numbered, and into left how many events up to the session's last written
// one (dlm.last_seq) are still unnumbered.
func (s *Store) queueNumber(b *pgx.Batch, wait bool, numbered, left *int64) {
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
		SELECT (SELECT count(*) FROM u),
			(SELECT count(*) FROM events, mine WHERE events.id IS NULL AND events.seq <= mine.seq)
			- (SELECT count(*) FROM u, mine WHERE u.seq <= mine.seq)`, numberBatch)
	qq.QueryRow(func(r pgx.Row) error { return r.Scan(numbered, left) })
}

// numberer runs this instance's numbering rounds: a writer whose events
// someone else was numbering when it committed asks for the next round and
// waits for it, without holding a connection. A round starts after the
// request, so its snapshot includes the writer's commit.
type numberer struct {
	mu   sync.Mutex
	next chan struct{} // closed when the next round has ended
	kick chan struct{}
}

// awaitNumbering waits until a numbering round that starts now has ended,
// or ctx ends.
func (s *Store) awaitNumbering(ctx context.Context) error {
	s.num.mu.Lock()
	done := s.num.next
	s.num.mu.Unlock()
	kick(s.num.kick)
	select {
	case <-done:
		return nil
	case <-s.quit:
		return errClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

// numberLoop runs numbering rounds when asked, and every numberEvery for
// stragglers, until Close.
func (s *Store) numberLoop() {
	ctx, cancel := s.quitContext()
	defer cancel()
	tick := time.NewTicker(numberEvery)
	defer tick.Stop()
	for {
		select {
		case <-s.quit:
			s.num.mu.Lock()
			close(s.num.next) // nobody waits for a round that never comes
			s.num.mu.Unlock()
			return
		case <-s.num.kick:
		case <-tick.C:
		}
		s.num.mu.Lock()
		done := s.num.next
		s.num.next = make(chan struct{})
		s.num.mu.Unlock()
		if err := s.numberRound(ctx); err != nil && ctx.Err() == nil {
			s.log.Debug("dlm: numbering events failed", "err", err)
		}
		close(done)
	}
}

// numberRound numbers every committed event still unnumbered, waiting for
// the numbering lock.
func (s *Store) numberRound(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.opts.OpTimeout)
	defer cancel()
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	for {
		var n, left int64
		b := &pgx.Batch{}
		s.queueNumbering(b, true, &n, &left)
		if err := conn.SendBatch(ctx, b).Close(); err != nil {
			return err
		}
		if n < numberBatch {
			return nil
		}
	}
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
