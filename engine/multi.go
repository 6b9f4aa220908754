package engine

import (
	"context"
	"slices"
	"strconv"
	"time"

	"github.com/dlmhq/dlm"
)

// LockSpec is one lock of a multi-lock acquire.
type LockSpec struct {
	Key   dlm.Key  // Namespace is the tenant or dlm.GlobalNamespace
	Mode  dlm.Mode // default Exclusive
	Limit int      // as AcquireRequest.Limit
}

// AcquireManyRequest asks for several locks at once, all or nothing. The
// fields other than Locks are as in AcquireRequest and apply to each lease.
type AcquireManyRequest struct {
	Tenant         string
	Locks          []LockSpec // 2..MaxLocks distinct locks
	HolderID       string
	TTL            time.Duration
	Wait           time.Duration
	IdempotencyKey string
	LockDelay      time.Duration
	MaxHold        time.Duration
}

// MaxLocks is the most locks one multi-lock acquire may name.
const MaxLocks = 64

// requests validates r and turns it into the core's form: one request per
// lock, each with its own lease ID and idempotency key.
func (e *Engine) requests(r AcquireManyRequest) ([]dlm.Request, error) {
	if len(r.Locks) < 2 || len(r.Locks) > MaxLocks {
		return nil, dlm.Invalid("locks", "must name between 2 and %d locks", MaxLocks)
	}
	rs := make([]dlm.Request, len(r.Locks))
	seen := make(map[dlm.Key]bool, len(r.Locks))
	for i, l := range r.Locks {
		if seen[l.Key] {
			return nil, dlm.Invalid("locks", "lock %q is named twice", l.Key.Name)
		}
		seen[l.Key] = true
		req, err := e.request(AcquireRequest{
			Tenant: r.Tenant, Key: l.Key, Mode: l.Mode, HolderID: r.HolderID, TTL: r.TTL, Wait: r.Wait,
			IdempotencyKey: r.IdempotencyKey, Limit: l.Limit, LockDelay: r.LockDelay, MaxHold: r.MaxHold,
		})
		if err != nil {
			return nil, err
		}
		if req.IdempotencyKey != "" {
			req.IdempotencyKey = memberKey(req.IdempotencyKey, i)
		}
		rs[i] = req
	}
	return rs, nil
}

// memberKey is the idempotency key stored with the i-th lease of a
// multi-lock acquire made with key: each lease has its own, so that each
// can be found (and ended) on its own. The separator cannot appear in a
// key a client sends.
func memberKey(key string, i int) string {
	return key + "\x1f" + strconv.Itoa(i)
}

// AcquireMany grants every lock of r in one commit, or none of them. With
// r.Wait it queues on every lock at once and returns once all are granted
// together. replayed is true when every lease is that of an earlier request
// with the same idempotency key.
//
// Errors are those of Acquire; a conflict or time-out names in Lock a lock
// that blocked and carries its holders.
func (e *Engine) AcquireMany(ctx context.Context, r AcquireManyRequest) (leases []dlm.Lease, replayed bool, err error) {
	rs, err := e.requests(r)
	if err != nil {
		return nil, false, err
	}
	first := rs[0]
	var sub *subscription
	if first.Wait > 0 {
		if !e.enter() {
			return nil, false, errShuttingDown
		}
		defer e.wg.Done()
		sub = e.waiters.subscribe(first.ID, first)
		defer func() { e.waiters.unsubscribe(sub) }()
		if err := e.resumeFeed(ctx); err != nil {
			return nil, false, err
		}
	}
	start := e.now()
	need := dlm.Need{Tenants: []string{first.Tenant}}
	for _, req := range rs {
		need.Keys = append(need.Keys, req.Key)
		if req.IdempotencyKey != "" {
			need.Idempotency = append(need.Idempotency, dlm.IdempotencyKey{Tenant: req.Tenant, Key: req.IdempotencyKey})
		}
	}
	var (
		out     dlm.Outcome
		waiters []dlm.Waiter
		blocked *dlm.Error
	)
	err = e.write(ctx, need, func(v *view) error {
		for _, req := range rs {
			if req.IdempotencyKey == "" {
				break
			}
			if k, ok := v.idempotent(req.Tenant, req.IdempotencyKey); ok && k != req.Key {
				return dlm.Errorf(dlm.CodeIdempotencyKeyReused, "idempotency key was used for lock %q", k.Name)
			}
		}
		ss := make([]*dlm.LockState, len(rs))
		cs := make([]*dlm.Change, len(rs))
		backup := make([]dlm.LockState, len(rs))
		for i, req := range rs {
			ss[i], cs[i] = v.lock(req.Key), new(dlm.Change)
			backup[i] = *ss[i]
			backup[i].Holders, backup[i].Waiters = slices.Clone(ss[i].Holders), slices.Clone(ss[i].Waiters)
		}
		leases0, waiters0 := v.tenantUsage(first.Tenant)
		var i int
		var err error
		out, leases, waiters, i, err = dlm.AcquireAll(v.now, ss, rs, cs)
		if err == nil {
			err = e.checkManyUsage(leases0, waiters0, cs)
		}
		if err != nil {
			for i := range ss {
				*ss[i] = backup[i]
			}
			return err
		}
		if out == dlm.Conflict {
			view := ss[i].View(v.now)
			blocked = conflict(view.Holders, view.DelayUntil)
			blocked.Lock = ss[i].Key.Name
		}
		for i := range ss {
			v.save(ss[i], cs[i])
		}
		return nil
	})
	if err != nil {
		return nil, false, err
	}
	switch out {
	case dlm.Granted, dlm.Replayed:
		return leases, out == dlm.Replayed, nil
	case dlm.Conflict:
		return nil, false, blocked
	}
	if waiters[0].ID != first.ID {
		// A retry took over the entries of an earlier request.
		old := sub
		sub = e.waiters.subscribe(waiters[0].ID, first)
		e.waiters.unsubscribe(old)
		replayed = true
	}
	granted, outcome, err := e.park(ctx, first, waiters, sub, start.Add(first.Wait))
	if e.opts.Observer != nil {
		e.opts.Observer.Waited(e.now().Sub(start), outcome)
	}
	if err != nil {
		return nil, false, err
	}
	return collect(rs, leases, granted), replayed, nil
}

// checkManyUsage is checkUsage for the changes of a multi-lock decision.
func (e *Engine) checkManyUsage(leases, waiters int64, cs []*dlm.Change) error {
	granted, queued := int64(0), int64(0)
	for _, c := range cs {
		granted += int64(len(c.Granted))
		queued += int64(len(c.Queued))
	}
	if granted > 0 && leases+granted > e.opts.MaxLeasesPerTenant {
		return dlm.Errorf(dlm.CodeLimitExceeded, "tenant holds %d leases, the most allowed", leases)
	}
	if queued > 0 && waiters+queued > e.opts.MaxWaitersPerTenant {
		return dlm.Errorf(dlm.CodeLimitExceeded, "tenant has %d waiters queued, the most allowed", waiters)
	}
	return nil
}

// collect puts the leases of a granted group in request order: those of
// the group's entries, and those a retry found still held (replayed).
func collect(rs []dlm.Request, replayed, granted []dlm.Lease) []dlm.Lease {
	out := make([]dlm.Lease, len(rs))
	for i, req := range rs {
		if i < len(replayed) && replayed[i].ID != "" {
			out[i] = replayed[i]
		}
		for _, l := range granted {
			if l.Key == req.Key {
				out[i] = l
			}
		}
	}
	return out
}

// grantReadyGroups looks, after a group's commit, for multi-lock entries
// that reached the head of a queue they could be granted from, and tries
// each such group on all of its locks in a group of its own.
func (e *Engine) grantReadyGroups(v *view) {
	var ready map[string]bool
	for _, s := range v.saves {
		w, ok := s.State.ReadyGroup(v.now)
		if !ok || ready[w.Group] {
			continue
		}
		if ready == nil {
			ready = make(map[string]bool)
		}
		ready[w.Group] = true
		if !e.enter() {
			return
		}
		go e.grantGroup(w)
	}
}

// grantGroup grants the group of entry w if it is grantable on all of its
// locks now (dlm.GrantGroup). It runs on a goroutine of its own, counted in
// e.wg (see enter).
func (e *Engine) grantGroup(w dlm.Waiter) {
	defer e.wg.Done()
	keys := w.GroupKeys
	err := e.write(context.Background(), dlm.Need{Keys: keys}, func(v *view) error {
		ss := make([]*dlm.LockState, len(keys))
		cs := make([]*dlm.Change, len(keys))
		for i, k := range keys {
			ss[i], cs[i] = v.lock(k), new(dlm.Change)
		}
		dlm.GrantGroup(v.now, ss, w.Group, cs)
		for i := range ss {
			v.save(ss[i], cs[i])
		}
		return nil
	})
	if err != nil {
		e.opts.Logger.Warn("granting a multi-lock acquire", "err", err)
	}
}
