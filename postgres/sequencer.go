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
// Instead IDs are given out under a transaction-scoped advisory lock, the
// numbering lock, held from the moment they are given until COMMIT. Such
// transactions follow one another, so each one's IDs are above every ID
// already visible, and readers, who read only numbered rows, never see an ID
// appear below one they have read.
//
// A group of Updates (commit.go) takes the lock in the round trip that
// carries its writes and COMMIT, waiting for it if it must: it then numbers
// the events that others committed unnumbered (below), and inserts its own
// with the next IDs, in the order they were saved. Its commit is also the
// numbering's, one WAL flush for both, and each event row is written once.
// The lock comes after every other lock a transaction takes, and whoever
// holds it waits for nothing more, so a wait for it lasts at most one
// commit and never closes a cycle. Groups that write events thus commit one
// after the other across the cluster, a WAL flush each, but each flush
// serves a whole group. Transactions on one lock commit one after the other
// under its row lock, so their events are numbered in that order.
//
// A transaction of one fn only tries the lock. If another transaction holds
// it, it inserts its events with a NULL id, commits, gives its connection
// back and asks its instance's numberer for a round: a numbering transaction
// that waits for the lock and numbers every committed event still
// unnumbered, in insertion order (seq), the events of every writer that
// asked meanwhile included. So many small transactions, which contend for
// one lock across instances, share numbering transactions instead of
// flushing one after the other. An Update's events are numbered before it
// returns, so that they are readable by then (history and "watch from now"
// rely on that, as on SQLite).
//
// If the writer's connection fails between its COMMIT and the numbering, the
// Update still succeeded; every instance also runs a numbering pass every
// numberEvery, which numbers such stragglers.
const (
	numberEvery = time.Second
	// numberBatch bounds how many events one numbering statement numbers.
	numberBatch = 10000
)

// queueNumbering queues a numbering transaction into b: see queueNumber.
func (s *Store) queueNumbering(b *pgx.Batch, numbered *int64) {
	b.Queue(`BEGIN`)
	s.queueNumber(b, true, numbered)
	b.Queue(`COMMIT`)
}

// queueNumber queues the statements that take the numbering lock (with
// wait, waiting for it; without, only if it is free) and, if they got it,
// number up to numberBatch committed events still unnumbered. They store how
// many they numbered into numbered, and leave the setting dlm.numbering
// 'true' if the transaction may give out the next IDs: it holds the lock and
// no event committed before is left unnumbered.
func (s *Store) queueNumber(b *pgx.Batch, wait bool, numbered *int64) {
	if wait {
		b.Queue(`SELECT pg_advisory_xact_lock($1), set_config('dlm.numbering', 'true', true)`, lockKey("number", s.schema))
	} else {
		b.Queue(`SELECT set_config('dlm.numbering', pg_try_advisory_xact_lock($1)::text, true)`, lockKey("number", s.schema))
	}
	// This statement takes its snapshot after the lock is granted, so it
	// sees every numbering transaction before it.
	b.Queue(`WITH c AS (SELECT last FROM event_counter),
		p AS (SELECT seq, row_number() OVER (ORDER BY seq) AS rn FROM (
			SELECT seq FROM events WHERE id IS NULL AND current_setting('dlm.numbering') = 'true'
			ORDER BY seq LIMIT $1) pending),
		u AS (UPDATE events e SET id = c.last + p.rn FROM p, c WHERE e.seq = p.seq RETURNING e.id),
		last AS (UPDATE event_counter SET last = (SELECT max(id) FROM u) WHERE EXISTS (SELECT FROM u))
		SELECT n, set_config('dlm.numbering', (current_setting('dlm.numbering') = 'true' AND n < $1)::text, true)
		FROM (SELECT count(*) AS n FROM u) u`, numberBatch).
		QueryRow(func(r pgx.Row) error { return r.Scan(numbered, nil) })
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
		var n int64
		b := &pgx.Batch{}
		s.queueNumbering(b, &n)
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
