package postgres

import (
	"context"

	"github.com/dlmhq/dlm"
)

// Group commit.
//
// One committer goroutine per instance takes every Update queued while its
// previous group was in flight and runs their fns in one transaction (a
// batch in group mode, see batch.go): the fns share its round trips, their
// writes travel as a few multi-row statements, and one COMMIT, one WAL
// flush, makes them all durable. Under load a group costs about three round
// trips (read the locks, perhaps read once more, write and commit) whatever
// its size, where one transaction per Update cost two round trips and a
// flush each.
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
	err         error
	numberLater bool // wait for the next numbering round
}

// commitLoop runs groups until Close.
func (s *Store) commitLoop() {
	group := make([]*request, 0, maxGroup)
	for {
		group = group[:0]
		select {
		case r := <-s.reqs:
			group = append(group, r)
		case <-s.quit:
			return
		}
	fill:
		for len(group) < maxGroup {
			select {
			case r := <-s.reqs:
				group = append(group, r)
			default:
				break fill
			}
		}
		s.runGroup(group)
	}
}

// runGroup runs the fns of group in one transaction and answers them.
func (s *Store) runGroup(group []*request) {
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.OpTimeout)
	defer cancel()
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		for _, r := range group {
			close(r.start)
			r.err = unavailable(err)
			close(r.done)
		}
		return
	}
	defer conn.Release() // the pool drops it if a transaction is left open
	b := newBatch(ctx, s, conn.Conn(), true, true)
	txs := make([]*tx, len(group))
	for i, r := range group {
		if err := r.ctx.Err(); err != nil {
			r.err = context.Cause(r.ctx)
			continue
		}
		txs[i] = b.newTx(r.octx)
		b.running++
	}
	if b.running == 0 {
		b.kick <- struct{}{}
	}
	for i, r := range group {
		if txs[i] != nil {
			r.start <- txs[i]
		}
		close(r.start)
	}
	b.drive()
	if err = b.commit(); err != nil {
		b.rollback()
	}
	for i, r := range group {
		if t := txs[i]; t != nil && err != nil {
			r.err = unavailable(err)
		} else if t != nil {
			r.numberLater = b.numberLater
		}
		close(r.done)
	}
	if err == nil && len(b.w.tokens)+len(b.w.leases)+len(b.w.waiters)+len(b.w.events) > 0 {
		s.changed()
	}
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
	switch {
	case err != nil:
		return unavailable(err)
	case r.err != nil:
		return r.err
	case r.numberLater && t.events():
		// The Update has committed: a failure here only delays its
		// events, which the next round numbers.
		if err := s.awaitNumbering(octx); err != nil {
			s.log.Debug("dlm: waiting for events to be numbered", "err", err)
		}
	}
	return nil
}
