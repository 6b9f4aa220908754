package engine

import (
	"context"
	"sync"
	"time"

	"github.com/dlmhq/dlm"
)

// This file is the engine's one write path: group commit. Every operation
// that changes locks is an op, which names what it reads (a dlm.Need) and
// carries a decision on the loaded LockStates. Concurrent ops form a group:
// the store loads everything the group needs in one call, the decisions
// run one after another in memory, and the store makes all their saves
// durable in one commit. While a group commits, the next one gathers.

// op is one operation in a group.
type op struct {
	need dlm.Need
	// decide runs on the group's view and returns the op's answer. What it
	// saved (view.save) is committed even if it returns an error; what it
	// changed it must save or put back (see Acquire's backup), since the
	// states are shared by the group.
	decide func(v *view) error
	err    error
	lead   bool          // woken to lead the next group, not with a result
	wake   chan struct{} // one send: a result or the lead
}

// groupTimeout bounds one group's store calls. The group serves many
// callers, so it does not run on any one caller's context.
const groupTimeout = 10 * time.Second

// grouper gathers ops into groups and keeps up to max groups in flight.
type grouper struct {
	mu      sync.Mutex
	queue   []*op
	running int
	max     int
}

var opPool = sync.Pool{New: func() any { return &op{wake: make(chan struct{}, 1)} }}

// write runs one op in the next group and returns once its saves are
// durable (or it failed). need and decide are as in op. Once queued, the op
// runs even if ctx ends: its group serves other callers too.
func (e *Engine) write(ctx context.Context, need dlm.Need, decide func(v *view) error) error {
	if err := ctx.Err(); err != nil {
		return context.Cause(ctx)
	}
	o := opPool.Get().(*op)
	o.need, o.decide, o.err, o.lead = need, decide, nil, false
	g := &e.group
	g.mu.Lock()
	if g.running < g.max {
		g.running++
		g.mu.Unlock()
		e.lead(o)
	} else {
		g.queue = append(g.queue, o)
		g.mu.Unlock()
		<-o.wake
		if o.lead {
			e.lead(o)
		}
	}
	err := o.err
	*o = op{wake: o.wake}
	opPool.Put(o)
	return err
}

// lead runs a group of first and everything queued, hands the lead to the
// oldest op queued meanwhile, if any, and then answers the group: the
// goroutines of callers take turns running groups, so no op waits for a
// dedicated goroutine to be scheduled, and the next group starts before
// this one's callers are woken.
func (e *Engine) lead(first *op) {
	g := &e.group
	g.mu.Lock()
	ops := append([]*op{first}, g.queue...)
	g.queue = g.queue[:0]
	g.mu.Unlock()

	e.runGroup(ops)

	g.mu.Lock()
	if len(g.queue) == 0 {
		g.running--
		g.mu.Unlock()
	} else {
		next := g.queue[0]
		g.queue = g.queue[1:]
		g.mu.Unlock()
		next.lead = true
		next.wake <- struct{}{}
	}
	for _, o := range ops[1:] {
		o.wake <- struct{}{}
	}
}

// runGroup loads what ops need, decides each, commits their saves and then
// tells waiters, watchers and the sweeper what changed. It sets each op's
// err.
func (e *Engine) runGroup(ops []*op) {
	ctx, cancel := context.WithTimeout(context.Background(), groupTimeout)
	defer cancel()
	var need dlm.Need
	if len(ops) == 1 {
		need = ops[0].need
	} else {
		for _, o := range ops {
			need.Keys = append(need.Keys, o.need.Keys...)
			need.Leases = append(need.Leases, o.need.Leases...)
			need.Idempotency = append(need.Idempotency, o.need.Idempotency...)
			need.Tenants = append(need.Tenants, o.need.Tenants...)
		}
	}
	b, err := e.store.Load(ctx, &need)
	if err != nil {
		for _, o := range ops {
			o.err = err
		}
		return
	}
	v := newView(b, e.floor)
	for _, o := range ops {
		o.err = o.decide(v)
	}
	if len(v.saves) == 0 {
		b.Abort()
		return
	}
	if err := b.Commit(ctx, v.saves); err != nil {
		for _, o := range ops {
			if o.err == nil {
				o.err = err
			}
		}
		return
	}
	for _, s := range v.saves {
		e.afterCommit(s)
	}
	e.grantReadyGroups(v)
}

// view is a group's loaded state as its decisions see it: the batch plus
// what earlier decisions of the group did.
type view struct {
	b     dlm.Batch
	now   time.Time
	floor int64
	saves []dlm.Save
	// What the group's saves did so far, for the lookups that the batch
	// answers as loaded.
	ended map[string]*dlm.EndedLease
	idem  map[dlm.IdempotencyKey]*dlm.Key // nil: bound no more
	usage map[string]*usage
}

type usage struct{ leases, waiters int64 }

func newView(b dlm.Batch, floor int64) *view {
	return &view{b: b, now: b.Now(), floor: floor}
}

// lock returns key's state for a decision. Its grants carry tokens at least
// the engine's floor (see LockState.Floor).
func (v *view) lock(key dlm.Key) *dlm.LockState {
	s := v.b.Lock(key)
	if s != nil {
		s.Floor = v.floor
	}
	return s
}

// save records what a decision did to s, for the commit, and keeps the
// group's lookups in step with it: a waiter that leaves the queue or a lease
// that ends frees its idempotency key (unless the waiter became a holder,
// which binds it again), as it does in the store.
func (v *view) save(s *dlm.LockState, c *dlm.Change) {
	if c.Empty() {
		return
	}
	v.saves = append(v.saves, dlm.Save{State: s, Change: c})
	for i := range c.Dequeued {
		w := &c.Dequeued[i]
		v.bind(w.Tenant, w.IdempotencyKey, nil)
		v.count(w.Tenant).waiters--
	}
	for i := range c.Queued {
		w := &c.Queued[i]
		v.bind(w.Tenant, w.IdempotencyKey, &w.Key)
		v.count(w.Tenant).waiters++
	}
	for i := range c.Granted {
		l := &c.Granted[i]
		v.bind(l.Tenant, l.IdempotencyKey, &l.Key)
		v.count(l.Tenant).leases++
	}
	for i := range c.Ended {
		l := &c.Ended[i]
		if v.ended == nil {
			v.ended = make(map[string]*dlm.EndedLease)
		}
		v.ended[l.ID] = l
		v.bind(l.Tenant, l.IdempotencyKey, nil)
		v.count(l.Tenant).leases--
	}
}

// bind records that tenant's idempotency key idem now names the lock k, or
// (k nil) none.
func (v *view) bind(tenant, idem string, k *dlm.Key) {
	if idem == "" {
		return
	}
	if v.idem == nil {
		v.idem = make(map[dlm.IdempotencyKey]*dlm.Key)
	}
	v.idem[dlm.IdempotencyKey{Tenant: tenant, Key: idem}] = k
}

func (v *view) count(tenant string) *usage {
	if v.usage == nil {
		v.usage = make(map[string]*usage)
	}
	u := v.usage[tenant]
	if u == nil {
		u = new(usage)
		v.usage[tenant] = u
	}
	return u
}

// findLease is Batch.Lease as of the group's decisions so far: a lease held
// on a lock, or one that has ended (in this group or before it).
func (v *view) findLease(id string) (*dlm.Lease, *dlm.EndedLease) {
	if ended := v.ended[id]; ended != nil {
		return nil, ended
	}
	l, ended := v.b.Lease(id)
	if l == nil {
		return nil, ended
	}
	// Every decision that removes a holder lists it in Ended, so a stored
	// holder that the group did not end is still on its lock.
	s := v.lock(l.Key)
	if i := s.Holder(id); i >= 0 {
		return &s.Holders[i], nil
	}
	return nil, nil
}

// idempotent is Batch.Idempotent as of the group's decisions so far.
func (v *view) idempotent(tenant, idem string) (dlm.Key, bool) {
	k := dlm.IdempotencyKey{Tenant: tenant, Key: idem}
	if key, ok := v.idem[k]; ok {
		if key == nil {
			return dlm.Key{}, false
		}
		return *key, true
	}
	return v.b.Idempotent(k)
}

// tenantUsage is Batch.Usage as of the group's decisions so far.
func (v *view) tenantUsage(tenant string) (leases, waiters int64) {
	leases, waiters = v.b.Usage(tenant)
	if u := v.usage[tenant]; u != nil {
		leases += u.leases
		waiters += u.waiters
	}
	return leases, waiters
}
