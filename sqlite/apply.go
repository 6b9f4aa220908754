package sqlite

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"runtime"
	"slices"
	"sync/atomic"
	"time"

	"github.com/dlmhq/dlm"
)

// A batch is acknowledged once the journal holds it; writing its rows into
// SQLite happens afterwards, on the applier goroutine, so that SQLite's
// statements, commits and checkpoints stay off the path of every request.
// Until a batch is applied the committer answers for it from memory (its
// pending overlay), and reads of the file wait for it (Store.View).

// applied is one batch handed to the applier, or, with retire set, a
// journal to retire once every batch before it is written.
type applied struct {
	seq    int64
	o      *overlay
	retire *journal
	gen    uint64 // the retired journal's next generation
}

// writer owns the write connection and writes overlays into the file. The
// applier uses it; the store's direct writes use it only while the applier
// is idle (see Store.direct).
type writer struct {
	conn  *sql.Conn
	stmts stmtCache
	// raw are apply's statements, prepared on the driver's connection and
	// run only inside conn.Raw: a window of 64 cycles binds ~2,000 values,
	// and database/sql's copying of each into a driver.NamedValue was a
	// fifth of what the applier allocated.
	raw      map[string]driver.Stmt
	args     []any                // reused argument list for flush
	named    []driver.NamedValue  // args as the driver takes them
	expanded map[expansion]string // multi-row statements by size
	rows     rows                 // reused by apply
}

func newWriter(conn *sql.Conn) *writer {
	return &writer{conn: conn, stmts: stmtCache{conn: conn, stmts: map[string]*sql.Stmt{}},
		raw: map[string]driver.Stmt{}, expanded: map[expansion]string{}}
}

// rawExec runs query with args on dc, the write connection's driver
// connection inside conn.Raw, preparing it the first time.
func (w *writer) rawExec(ctx context.Context, dc any, query string, args []any) error {
	st, ok := w.raw[query]
	if !ok {
		var err error
		if st, err = dc.(driver.ConnPrepareContext).PrepareContext(ctx, query); err != nil {
			return err
		}
		w.raw[query] = st
	}
	w.named = w.named[:0]
	for i, v := range args {
		w.named = append(w.named, driver.NamedValue{Ordinal: i + 1, Value: v})
	}
	_, err := st.(driver.StmtExecContext).ExecContext(ctx, w.named)
	clear(w.named) // keep no strings alive
	return err
}

// close closes the statements and has database/sql discard the driver's
// connection rather than pool it: a failure may have left it inside a
// transaction, and the next committer must start on a clean one.
func (w *writer) close() {
	w.stmts.close()
	_ = w.conn.Raw(func(any) error {
		for _, st := range w.raw {
			st.Close()
		}
		return driver.ErrBadConn
	})
	w.conn.Close()
}

func (w *writer) exec(ctx context.Context, query string) error {
	_, err := w.stmts.ExecContext(ctx, query)
	return err
}

// apply writes batches into the file in one SQLite transaction. A batch
// without an overlay changed nothing. fresh says that the file holds none
// of the batches yet (see rows.gather).
func (w *writer) apply(batches []applied, fresh bool) error {
	if !slices.ContainsFunc(batches, func(b applied) bool { return b.o != nil }) {
		return nil
	}
	w.rows.gather(batches, fresh)
	ctx := context.Background()
	return w.conn.Raw(func(dc any) error {
		if err := w.rawExec(ctx, dc, `BEGIN IMMEDIATE`, nil); err != nil {
			return err
		}
		if err := w.flush(ctx, dc, &w.rows); err != nil {
			_ = w.rawExec(ctx, dc, `ROLLBACK`, nil)
			return err
		}
		return w.rawExec(ctx, dc, `COMMIT`, nil)
	})
}

// applyLoop applies the batches the committer hands over until the queue
// is closed. It lingers after the first batch of a group, gathering more,
// until applyLinger has passed, half the queue is full, or a reader (or the
// committer) waits for the file: one SQLite commit then writes many
// batches, each page it touches once, and more short leases never need a
// row (rows.gather). After a failure it applies nothing more: the journal
// still holds those batches, and the Store refuses work until a restart
// replays them.
func (c *committer) applyLoop() {
	defer close(c.applierDone)
	linger := time.NewTimer(applyLinger)
	var batches []applied
	for open := true; open; {
		b, ok := <-c.applyQueue
		if !ok {
			return
		}
		batches = append(batches[:0], b)
		linger.Reset(applyLinger)
	gather:
		for len(batches) < unappliedMax/2 && b.retire == nil {
			select {
			case b, ok = <-c.applyQueue:
				if !ok {
					open = false
					break gather
				}
				batches = append(batches, b)
			case <-linger.C:
				break gather
			case <-c.progress.hurry:
				// Take what is queued already, then apply at once.
				for len(batches) < unappliedMax && b.retire == nil {
					select {
					case b, ok = <-c.applyQueue:
						if !ok {
							open = false
							break gather
						}
						batches = append(batches, b)
						continue
					default:
					}
					break
				}
				break gather
			}
		}
		// A retirement ends a group: it comes after the batches before it.
		var retire *applied
		if last := batches[len(batches)-1]; last.retire != nil {
			retire, batches = &last, batches[:len(batches)-1]
		}
		if len(batches) > 0 {
			if c.progress.failed() == nil {
				if err := c.w.apply(batches, true); err != nil {
					c.progress.fail(err)
				}
			}
			if c.progress.failed() == nil {
				c.progress.advance(batches[len(batches)-1].seq)
			}
		}
		if retire != nil {
			c.retire(*retire)
		}
	}
}

// retire syncs SQLite, which now holds every batch of journal r.retire, and
// starts that journal over, off the path of requests.
func (c *committer) retire(r applied) {
	defer func() { c.retired <- struct{}{} }()
	if c.progress.failed() != nil {
		return
	}
	err := syncFiles(c.files...)
	if err == nil {
		err = r.retire.reset(r.gen)
	}
	if err != nil {
		c.progress.fail(err)
	}
}

// applyLinger is how long the applier gathers batches when nobody waits
// for the file.
const applyLinger = 10 * time.Millisecond

// progress tracks the batches from their decision to the file: which
// batch last took its now (decided), was answered and is in the
// file (applied), and the now of each batch not yet applied, for readers.
type progress struct {
	decided  atomic.Int64
	answered atomic.Int64
	applied  atomic.Int64
	err      atomic.Pointer[error]
	// moved is closed and replaced whenever applied or err changes.
	moved atomic.Pointer[chan struct{}]
	// hurry tells the applier that someone waits for the file.
	hurry chan struct{}
	// nows holds the now of batch seq at nows[seq%len(nows)]; the committer
	// decides batch seq only once batch seq-len(nows) is applied.
	nows [unappliedMax]struct{ seq, now atomic.Int64 }
}

// unappliedMax bounds the batches decided but not yet in the file: past
// it, the committer waits for the applier.
const unappliedMax = 64

// takingNow marks a batch that is about to take its now.
const takingNow = -1

func newProgress() *progress {
	p := &progress{hurry: make(chan struct{}, 1)}
	ch := make(chan struct{})
	p.moved.Store(&ch)
	return p
}

func (p *progress) failed() error {
	if e := p.err.Load(); e != nil {
		return *e
	}
	return nil
}

func (p *progress) fail(err error) {
	p.err.CompareAndSwap(nil, &err)
	p.signal()
}

func (p *progress) advance(seq int64) {
	p.applied.Store(seq)
	p.signal()
}

// decide records that batch seq takes its now from clock, and returns that
// now.
func (p *progress) decide(seq int64, clock dlm.Clock) time.Time {
	slot := &p.nows[seq%unappliedMax]
	// Invalidate the slot, mark it taking, then publish it: a reader that
	// sees seq in the slot before and after reading the now has this
	// batch's now or the mark.
	slot.seq.Store(0)
	slot.now.Store(takingNow)
	slot.seq.Store(seq)
	p.decided.Store(seq)
	now := clock.Now()
	slot.now.Store(now.UnixNano())
	return now
}

// undecide records that the batch after seq, which took its now, ended
// without a commit: readers need not wait for its now any more.
func (p *progress) undecide(seq int64) { p.decided.Store(seq) }

// readNow is the time a read of the file judges expiry at: now, but no
// later than the now of the oldest batch that may be missing from the
// file. That batch decided at its own now on the state the read sees;
// judging later could show a lease expired that the batch is renewing, and
// then live again once it is applied. The read's snapshot must start after
// readNow returns.
func (p *progress) readNow(clock dlm.Clock) time.Time {
	now := clock.Now()
	for {
		a := p.applied.Load()
		if p.decided.Load() <= a {
			return now
		}
		slot := &p.nows[(a+1)%unappliedMax]
		seq := slot.seq.Load()
		t := slot.now.Load()
		if slot.seq.Load() != seq || seq != a+1 || t == takingNow {
			// The batch is taking its now, or was applied and its slot
			// reused meanwhile: look again.
			runtime.Gosched()
			continue
		}
		if t < now.UnixNano() {
			return time.Unix(0, t).UTC()
		}
		return now
	}
}

func (p *progress) signal() {
	ch := make(chan struct{})
	close(*p.moved.Swap(&ch))
}

// wait returns once the file holds batch seq, the applier failed, or ctx
// ended.
func (p *progress) wait(ctx context.Context, seq int64) error {
	for {
		// Take the channel before looking, so that a change after the look
		// closes it.
		moved := *p.moved.Load()
		if err := p.failed(); err != nil {
			return unavailable(err)
		}
		if p.applied.Load() >= seq {
			return nil
		}
		select {
		case p.hurry <- struct{}{}:
		default:
		}
		select {
		case <-moved:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
}
