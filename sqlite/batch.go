package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"time"

	"github.com/dlmhq/dlm"
)

// batch is a loaded dlm.Batch. It holds the store's writer (Store.mu) from
// Load until Commit or Abort: the engine runs one batch at a time on this
// store, and the rare direct writes wait for it.
type batch struct {
	s      *Store
	c      *committer
	seq    int64
	now    time.Time
	start  time.Time // when Load began, for ObserveCommits
	locks  map[dlm.Key]*dlm.LockState
	live   map[string]*dlm.Lease
	ended  map[string]*dlm.EndedLease
	idem   map[dlm.IdempotencyKey]dlm.Key
	usage  map[string]usage
	closed bool
}

var _ dlm.Batch = (*batch)(nil)

// Load implements dlm.Store. Locks, live leases, idempotency keys and usage
// come from memory; only a lock idle for long (its last fencing token) or
// an ended lease may need a read of the file.
func (s *Store) Load(ctx context.Context, need *dlm.Need) (dlm.Batch, error) {
	start := time.Now()
	c, err := s.writer()
	if err != nil {
		return nil, err
	}
	b, err := c.load(ctx, need)
	if err != nil {
		s.mu.Unlock()
		return nil, err
	}
	b.s, b.start = s, start
	b.now = c.progress.decide(b.seq, s.clock)
	return b, nil
}

// load reads what need names, for batch c.seq+1.
func (c *committer) load(ctx context.Context, need *dlm.Need) (*batch, error) {
	seq := c.seq + 1
	// Keep the applier within reach: readers need the now of every batch
	// not yet in the file (progress.readNow).
	if c.progress.applied.Load() < seq-unappliedMax {
		if err := c.syncLazy(); err != nil {
			return nil, unavailable(err)
		}
	}
	if err := c.progress.wait(ctx, seq-unappliedMax); err != nil {
		return nil, err
	}
	c.forgetApplied()
	b := &batch{
		c: c, seq: seq,
		locks: make(map[dlm.Key]*dlm.LockState, len(need.Keys)+len(need.Leases)),
		live:  map[string]*dlm.Lease{}, ended: map[string]*dlm.EndedLease{},
		idem: map[dlm.IdempotencyKey]dlm.Key{}, usage: make(map[string]usage, len(need.Tenants)),
	}
	for _, k := range need.Keys {
		if err := b.loadLock(ctx, k); err != nil {
			return nil, err
		}
	}
	for _, id := range need.Leases {
		if k, ok := c.mem.leases[id]; ok {
			if l := c.mem.holder(k, id); l != nil {
				b.live[id] = l
				if err := b.loadLock(ctx, k); err != nil {
					return nil, err
				}
				continue
			}
		}
		e, err := c.endedLease(ctx, id)
		if err != nil {
			return nil, err
		}
		if e != nil {
			b.ended[id] = e
		}
	}
	for _, ik := range need.Idempotency {
		if k, ok := c.mem.idem[idemKey{ik.Tenant, ik.Key}]; ok && c.mem.hasIdem(k, ik.Tenant, ik.Key) {
			b.idem[ik] = k
		}
	}
	for _, t := range need.Tenants {
		b.usage[t] = c.usage[t]
	}
	return b, nil
}

func (b *batch) loadLock(ctx context.Context, k dlm.Key) error {
	if b.locks[k] != nil {
		return nil
	}
	s, err := b.c.state(ctx, k)
	b.locks[k] = s
	return err
}

// state returns a copy of the committed state of k. A lock that is not in
// memory has no holders or waiters; only its fencing token may be in a
// pending batch or the file, and only if the key filter has seen it.
func (c *committer) state(ctx context.Context, k dlm.Key) (*dlm.LockState, error) {
	if s := c.mem.state(k); s != nil {
		return s, nil
	}
	s := &dlm.LockState{Key: k}
	if !c.known.mayHave(k) {
		return s, nil
	}
	for _, b := range slices.Backward(c.pending) {
		if t, ok := b.o.tokens[k]; ok {
			s.Token = t
			return s, nil
		}
	}
	err := (&readTx{q: &c.rstmts}).queryEach(ctx, func(r *sql.Rows) error { return r.Scan(&s.Token) },
		`SELECT token FROM locks WHERE ns = ? AND name = ?`, k.Namespace, k.Name)
	return s, err
}

// endedLease finds an ended lease in the batches the applier has not
// written yet, then in the file. Lazy batches end no lease.
func (c *committer) endedLease(ctx context.Context, id string) (*dlm.EndedLease, error) {
	for _, b := range slices.Backward(c.pending) {
		if i, ok := b.o.endedByID[id]; ok {
			e := b.o.ended[i] // a copy: the overlay is reused once applied
			return &e, nil
		}
	}
	_, e, err := (&readTx{q: &c.rstmts}).FindLease(ctx, id)
	return e, err
}

func (b *batch) Now() time.Time { return b.now }

func (b *batch) Lock(k dlm.Key) *dlm.LockState { return b.locks[k] }

func (b *batch) Lease(id string) (*dlm.Lease, *dlm.EndedLease) { return b.live[id], b.ended[id] }

func (b *batch) Idempotent(k dlm.IdempotencyKey) (dlm.Key, bool) {
	key, ok := b.idem[k]
	return key, ok
}

func (b *batch) Usage(tenant string) (leases, waiters int64) {
	u := b.usage[tenant]
	return u.leases, u.waiters
}

// Abort implements dlm.Batch.
func (b *batch) Abort() {
	if b.closed {
		return
	}
	b.c.progress.undecide(b.c.seq)
	b.end()
}

func (b *batch) end() {
	b.closed = true
	b.s.mu.Unlock()
}

var errBatchEnded = dlm.Errorf(dlm.CodeUnavailable, "the batch has ended")

// Commit implements dlm.Batch: the saves become one journal record and one
// fdatasync, and only then the committed state in memory.
func (b *batch) Commit(ctx context.Context, saves []dlm.Save) error {
	if b.closed {
		return errBatchEnded
	}
	defer b.end()
	if err := b.c.commit(b.seq, saves); err != nil {
		b.c.progress.undecide(b.c.seq)
		return err
	}
	if len(b.c.lazy) == 1 {
		b.s.lazy.Reset(lazyDelay)
	}
	if f := b.s.commits.Load(); f != nil {
		(*f)(len(saves), time.Since(b.start))
	}
	return nil
}

// lazyDelay bounds how long a batch that only queued waiters waits for a
// later batch's fdatasync to make it durable (see syncLazy).
const lazyDelay = time.Millisecond

// commit makes saves durable as batch seq and applies them to memory. A
// batch that fails leaves memory as it was, and breaks the committer: the
// journal may hold its record.
func (c *committer) commit(seq int64, saves []dlm.Save) error {
	o := c.newOverlay()
	last := c.lastEvent
	for _, sv := range saves {
		for i := range sv.Change.Events {
			last++
			sv.Change.Events[i].ID = last
		}
		o.save(sv.State, sv.Change)
	}
	changed := !o.empty()
	lazy := changed && o.onlyWaiters()
	if changed {
		c.record = encodeRecord(c.record, o)
		if err := c.durable(lazy); err != nil {
			o.reset()
			c.free = append(c.free, o)
			c.broken = fmt.Errorf("journal: %w", err)
			return unavailable(c.broken)
		}
	}
	c.lastEvent = last
	for k := range o.tokens {
		c.known.add(k)
	}
	for _, s := range o.locks {
		c.mem.put(s)
	}
	clear(o.locks) // the engine's; memory has copies
	for t, d := range o.usage {
		u := c.usage[t]
		u.leases += d.leases
		u.waiters += d.waiters
		c.usage[t] = u
	}
	c.seq = seq
	switch {
	case lazy:
		c.lazy = append(c.lazy, applied{seq: seq, o: o})
	case changed:
		// The fdatasync made the lazy batches before it durable too.
		c.handOver(append(c.lazy, applied{seq: seq, o: o}))
		c.lazy = c.lazy[:0]
	case len(c.lazy) > 0:
		// Nothing to write, but it must not reach the file before them.
		c.lazy = append(c.lazy, applied{seq: seq})
		c.free = append(c.free, o)
	default:
		c.handOver([]applied{{seq: seq}})
		c.free = append(c.free, o)
	}
	// Reads from now on must see this batch: they wait for the applier to
	// write it, and so for a lazy batch's fdatasync too.
	c.progress.answered.Store(seq)
	return nil
}
