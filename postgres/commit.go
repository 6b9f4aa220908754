package postgres

import (
	"context"
	"errors"
	"time"

	"github.com/dlmhq/dlm"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

var errBatchEnded = errors.New("postgres: the batch has already committed or aborted")

// Commit implements dlm.Batch in one round trip: the saves folded into a
// few multi-row statements, the events with ids from the sequence, and
// COMMIT, so that one WAL flush makes the whole group durable. Event IDs
// are left 0 (see events.go). The rows it writes are those of locks the
// batch holds, new rows, and the usage counters of its own backend ("Usage
// rows" in writes.go): a commit waits for no other transaction, of this
// instance or another.
//
// If the connection is lost, the answer is unavailable and the connection
// is discarded; the transaction may or may not have committed.
func (b *batch) Commit(ctx context.Context, saves []dlm.Save) error {
	if b.closed {
		return unavailable(errBatchEnded)
	}
	defer b.end()
	w := newWrites()
	for _, sv := range saves {
		w.apply(sv.State, sv.Change)
	}
	pb := &pgx.Batch{}
	if len(b.dead) > 0 {
		// First, so that a waiter queued again under the same ID is
		// inserted after the dead one is gone.
		ids := make([]string, len(b.dead))
		for i, q := range b.dead {
			ids[i] = q.ID
			w.waiterUsage[q.Tenant]--
		}
		pb.Queue(`DELETE FROM waiters WHERE id = ANY($1)`, ids)
	}
	w.queue(pb, b.s.instance)
	if len(w.events) > 0 {
		w.queueEvents(pb)
	}
	committed := false
	pb.Queue(`COMMIT`).Exec(func(ct pgconn.CommandTag) error {
		committed = ct.String() == "COMMIT"
		if !committed {
			return errors.New("transaction rolled back: " + ct.String())
		}
		return nil
	})
	octx, cancel := context.WithTimeout(context.WithoutCancel(ctx), b.s.opts.OpTimeout)
	defer cancel()
	err := b.conn.Conn().SendBatch(octx, pb).Close()
	if !committed {
		if err == nil {
			err = errors.New("transaction not committed")
		}
		return unavailable(err)
	}
	if w.any() {
		b.s.changed()
	}
	return nil
}

// Abort implements dlm.Batch: none of the group's decisions is written.
// The waiters of gone instances that Load found are deleted all the same
// (in the round trip a ROLLBACK would take): nobody waits on them, and a
// sweep that decides nothing on their lock must still clear them, or the
// lock stays due for ever.
func (b *batch) Abort() {
	switch {
	case b.closed:
	case len(b.dead) > 0:
		if err := b.Commit(context.Background(), nil); err != nil {
			b.s.log.Debug("dlm: dropping the waiters of gone instances failed", "err", err)
		}
	default:
		b.end()
	}
}

// end ends the transaction, if it is still open, and gives the connection
// back. A connection that cannot roll back (it is lost, or the ROLLBACK
// fails) is left in its transaction, and the pool discards it.
func (b *batch) end() {
	b.closed = true
	defer b.conn.Release()
	c := b.conn.Conn()
	if c.IsClosed() || c.PgConn().TxStatus() == 'I' {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, _ = c.Exec(ctx, `ROLLBACK`)
}
