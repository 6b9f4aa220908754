package postgres

import (
	"context"
	"slices"

	"github.com/dlmhq/dlm"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Group commit.
//
// One committer goroutine per instance takes every Update queued while its
// previous group was running and runs their fns in one transaction (a batch
// in group mode, see batch.go): the fns share its round trips, their writes
// travel as a few multi-row statements, and one COMMIT, one WAL flush, makes
// them all durable. A group costs two round trips (read the locks, write and
// commit; an idempotency key or a second lock adds one) whatever its size,
// where one transaction per Update cost two round trips and a flush each;
// and each group's reads overlap the commit of the one before (commitLoop).
//
// A fn that cannot go on in its group (its lock is held by another
// transaction, it writes directly, or another fn of the group uses its
// idempotency key) moves to a transaction of its own and goes on there
// (tx.moveOut); the group goes on without it. A fn is never run twice.

// maxGroup bounds the Updates of one group, so that one transaction and its
// statements stay a manageable size.
const maxGroup = 256

// request is an Update waiting for, or running in, a group.
type request struct {
	ctx   context.Context // the caller's: a request that has ended is not run
	octx  context.Context // the operation's, bounded by OpTimeout
	start chan *tx        // the fn's tx, or nil if it is not to run
	done  chan struct{}
	// Set before done is closed:
	err error
}

// commitLoop runs groups until Close. While a group commits, the next one
// runs on another connection: its reads overlap the commit, and it commits
// as soon as the commit before it has returned. Commits thus follow one
// another within an instance (those of other instances run alongside); a
// round of the next group that would load a lock of the committing one
// waits for that commit (committing.overlaps), so that it sees its writes.
func (s *Store) commitLoop() {
	var (
		prev *committing // the group committing, if any
		reqs = make([]*request, 0, maxGroup)
	)
	for {
		reqs = reqs[:0]
		select {
		case r := <-s.reqs:
			reqs = append(reqs, r)
		case <-s.quit:
			if prev != nil {
				<-prev.done
			}
			return
		}
	fill:
		for len(reqs) < maxGroup {
			select {
			case r := <-s.reqs:
				reqs = append(reqs, r)
			default:
				break fill
			}
		}
		conn, err := s.acquire()
		if err != nil {
			answer(reqs, unavailable(err))
			continue
		}
		b := s.runGroup(conn, reqs)
		if prev != nil {
			select {
			case <-prev.done:
			default:
				b.behind = prev
			}
		}
		b.drive()
		if prev != nil {
			<-prev.done
		}
		prev = newCommitting(b)
		go func(c *committing) {
			defer close(c.done)
			defer conn.Release() // the pool drops it if a transaction is left open
			c.b.committed(c.b.commit())
		}(prev)
	}
}

// committing is a group whose commit is in flight: the locks it holds and
// the leases on them, so that the next group can tell whether a round would
// touch them.
type committing struct {
	b      *batch
	locks  map[dlm.Key]bool
	leases map[string]bool
	done   chan struct{}
}

func newCommitting(b *batch) *committing {
	c := &committing{b: b, locks: map[dlm.Key]bool{}, leases: map[string]bool{}, done: make(chan struct{})}
	for k, h := range b.locks {
		if h.state == nil {
			continue
		}
		c.locks[k] = true
		for _, l := range h.state.Holders {
			c.leases[l.ID] = true
		}
	}
	for id := range b.w.leases {
		c.leases[id] = true
	}
	return c
}

// overlaps reports whether asks load a lock that c holds, or find a lease
// on one.
func (c *committing) overlaps(asks []*ask) bool {
	for _, a := range asks {
		for _, k := range a.keys {
			if c.locks[k] {
				return true
			}
		}
		for _, id := range a.ids {
			if c.leases[id] {
				return true
			}
		}
	}
	return false
}

func (s *Store) acquire() (*pgxpool.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.OpTimeout)
	defer cancel()
	return s.pool.Acquire(ctx)
}

// answer fails the requests that could not run.
func answer(reqs []*request, err error) {
	for _, r := range reqs {
		close(r.start)
		r.err = err
		close(r.done)
	}
}

// runGroup starts the fns of reqs in a group on conn. The group's committed
// answers them.
func (s *Store) runGroup(conn *pgxpool.Conn, reqs []*request) *batch {
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.OpTimeout)
	b := newBatch(ctx, s, conn.Conn(), true, true)
	reqs = slices.Clone(reqs)
	txs := make([]*tx, len(reqs))
	for i, r := range reqs {
		if err := r.ctx.Err(); err != nil {
			r.err = context.Cause(r.ctx)
			continue
		}
		txs[i] = b.newTx(r.octx)
		b.running++
	}
	b.committed = func(err error) {
		defer cancel()
		if err != nil {
			b.rollback()
		}
		for i, r := range reqs {
			if t := txs[i]; t != nil && err != nil {
				r.err = unavailable(err)
			} else if t != nil {
			}
			close(r.done)
		}
		if err == nil && len(b.w.tokens)+len(b.w.leases)+len(b.w.waiters)+len(b.w.events) > 0 {
			s.changed()
		}
	}
	if b.running == 0 {
		b.kick <- struct{}{}
	}
	for i, r := range reqs {
		if txs[i] != nil {
			r.start <- txs[i]
		}
		close(r.start)
	}
	return b
}

// Update implements dlm.Store. fn runs in a group with the Updates queued at
// the same time (see above). Once it has begun it runs to its end even if
// ctx ends, bounded by OpTimeout, so that a caller that gives up cannot leave
// a commit half-known; an error from the store itself is unavailable.
func (s *Store) Update(ctx context.Context, fn func(dlm.Tx) error) error {
	s.closeMu.RLock()
	defer s.closeMu.RUnlock()
	if s.closed {
		return errClosed
	}
	if err := ctx.Err(); err != nil {
		return context.Cause(ctx)
	}
	octx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.opts.OpTimeout)
	defer cancel()
	r := &request{ctx: ctx, octx: octx, start: make(chan *tx, 1), done: make(chan struct{})}
	s.reqs <- r
	t := <-r.start
	if t == nil {
		<-r.done
		return r.err
	}
	err := fn(t)
	if err == nil {
		// A fn may note a store error and return nil (the engine keeps
		// such errors for after the Update); its writes are void all
		// the same.
		err = t.err
	}
	if t.moved {
		if t.conn == nil {
			return unavailable(err)
		}
		return s.end(octx, t, t.conn, err)
	}
	t.finish(err)
	<-r.done
	if err != nil {
		return unavailable(err)
	}
	return r.err
}
