package engine

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/dlmhq/dlm"
)

// AcquireRequest asks for a lease. Zero fields take their defaults.
type AcquireRequest struct {
	Tenant         string        // the caller's tenant; required
	Key            dlm.Key       // Namespace is Tenant or dlm.GlobalNamespace
	Mode           dlm.Mode      // default Exclusive
	HolderID       string        // required
	TTL            time.Duration // default 30s; else 100ms..MaxTTL
	Wait           time.Duration // 0: try once; else up to MaxWait in the FIFO queue
	IdempotencyKey string        // optional
	Limit          int           // with Shared: a semaphore of at most this many holders (1..MaxLimit)
	LockDelay      time.Duration // 0..MaxLockDelay; see dlm.Terms
	MaxHold        time.Duration // 0 (none) or at least the least TTL; see dlm.Terms
}

// Bounds of the lock features' fields.
const (
	MaxLimit     = 10000
	MaxLockDelay = time.Minute
)

// terms validates the lock features' fields of a request in mode m.
func terms(m dlm.Mode, limit int, delay, maxHold time.Duration) (dlm.Terms, error) {
	if limit < 0 || limit > MaxLimit {
		return dlm.Terms{}, dlm.Invalid("limit", "must be between 1 and %d", MaxLimit)
	}
	if limit > 0 && m != dlm.Shared {
		return dlm.Terms{}, dlm.Invalid("limit", "a semaphore is shared: give mode shared")
	}
	if delay < 0 || delay > MaxLockDelay {
		return dlm.Terms{}, outOfRange("lock_delay_ms", 0, MaxLockDelay)
	}
	if maxHold != 0 && maxHold < dlm.MinTTLMillis*time.Millisecond {
		return dlm.Terms{}, dlm.Invalid("max_hold_ms", "must be at least %d", dlm.MinTTLMillis)
	}
	return dlm.Terms{Limit: limit, LockDelay: delay, MaxHold: maxHold}, nil
}

// request validates r and turns it into the core's form.
func (e *Engine) request(r AcquireRequest) (dlm.Request, error) {
	if err := dlm.ValidateName(r.Key.Name); err != nil {
		return dlm.Request{}, err
	}
	if r.Key.Namespace != r.Tenant && r.Key.Namespace != dlm.GlobalNamespace || r.Tenant == "" {
		return dlm.Request{}, dlm.Errorf(dlm.CodePermissionDenied, "locks belong to a tenant: use a tenant key")
	}
	if err := dlm.ValidateHolderID(r.HolderID); err != nil {
		return dlm.Request{}, err
	}
	if r.Mode == 0 {
		r.Mode = dlm.Exclusive
	} else if r.Mode != dlm.Exclusive && r.Mode != dlm.Shared {
		return dlm.Request{}, dlm.Invalid("mode", "must be exclusive or shared")
	}
	if r.TTL == 0 {
		r.TTL = dlm.DefaultTTLMs * time.Millisecond
	} else if err := e.checkTTL(r.TTL); err != nil {
		return dlm.Request{}, err
	}
	if r.Wait < 0 || r.Wait > e.opts.MaxWait {
		return dlm.Request{}, outOfRange("wait_ms", 0, e.opts.MaxWait)
	}
	if r.IdempotencyKey != "" {
		if err := dlm.ValidateIdempotencyKey(r.IdempotencyKey); err != nil {
			return dlm.Request{}, err
		}
	}
	t, err := terms(r.Mode, r.Limit, r.LockDelay, r.MaxHold)
	if err != nil {
		return dlm.Request{}, err
	}
	return dlm.Request{
		ID: newID(), Tenant: r.Tenant, Key: r.Key, Mode: r.Mode, HolderID: r.HolderID,
		TTL: r.TTL, Wait: r.Wait, IdempotencyKey: r.IdempotencyKey, Terms: t,
	}, nil
}

func (e *Engine) checkTTL(ttl time.Duration) error {
	if ttl < dlm.MinTTLMillis*time.Millisecond || ttl > e.opts.MaxTTL {
		return outOfRange("ttl_ms", dlm.MinTTLMillis*time.Millisecond, e.opts.MaxTTL)
	}
	return nil
}

// outOfRange refuses a duration field outside [lo, hi], telling the caller
// hi (as the error's Max) so that a client can keep to the server's limit.
func outOfRange(field string, lo, hi time.Duration) error {
	err := dlm.Invalid(field, "must be between %d and %d", lo.Milliseconds(), hi.Milliseconds())
	err.Max = hi.Milliseconds()
	return err
}

// Acquire grants a lease on r.Key, or queues r for up to r.Wait and returns
// once it is granted. replayed is true when an earlier request with the same
// idempotency key already holds the lease, which is returned again.
//
// Errors: invalid_argument; lock_conflict (Wait 0) and wait_timeout, both
// with the holders; idempotency_key_reused; limit_exceeded; unavailable. If
// ctx ends while queued, the request leaves the queue and the error wraps
// context.Cause(ctx); a grant that raced with that is released unless it
// carries an idempotency key, so a retry can still collect it, and always
// if ctx ended with ErrKeyRevoked (see KeyContext).
func (e *Engine) Acquire(ctx context.Context, r AcquireRequest) (lease dlm.Lease, replayed bool, err error) {
	req, err := e.request(r)
	if err != nil {
		return dlm.Lease{}, false, err
	}
	var sub *subscription
	if req.Wait > 0 {
		// A request that may park is counted, so that Close can wait for it.
		if !e.enter() {
			return dlm.Lease{}, false, errShuttingDown
		}
		defer e.wg.Done()
		// Listen before the waiter can be granted, so no grant is missed.
		sub = e.waiters.subscribe(req.ID, req)
		defer func() { e.waiters.unsubscribe(sub) }()
		if err := e.resumeFeed(ctx); err != nil {
			return dlm.Lease{}, false, err
		}
	}
	start := e.now()
	var (
		out     dlm.Outcome
		waiter  dlm.Waiter
		holders []dlm.Lease
		delayed time.Time
	)
	need := dlm.Need{Keys: []dlm.Key{req.Key}, Tenants: []string{req.Tenant}}
	if req.IdempotencyKey != "" {
		need.Idempotency = []dlm.IdempotencyKey{{Tenant: req.Tenant, Key: req.IdempotencyKey}}
	}
	err = e.write(ctx, need, func(v *view) error {
		if req.IdempotencyKey != "" {
			if k, ok := v.idempotent(req.Tenant, req.IdempotencyKey); ok && k != req.Key {
				return dlm.Errorf(dlm.CodeIdempotencyKeyReused, "idempotency key was used for lock %q", k.Name)
			}
		}
		s := v.lock(req.Key)
		leases, waiters := v.tenantUsage(req.Tenant)
		atLimit := leases >= e.opts.MaxLeasesPerTenant || waiters >= e.opts.MaxWaitersPerTenant
		var backup dlm.LockState
		if atLimit {
			// The decision may be refused after it changed s: keep what
			// to put back.
			backup = *s
			backup.Holders, backup.Waiters = slices.Clone(s.Holders), slices.Clone(s.Waiters)
		}
		c := new(dlm.Change)
		var err error
		out, lease, waiter, err = s.Acquire(v.now, req, c)
		if err == nil && atLimit {
			err = e.checkUsage(leases, waiters, out, len(c.Queued) > 0)
		}
		if err != nil {
			if atLimit {
				*s = backup
			}
			return err
		}
		if out == dlm.Conflict {
			view := s.View(v.now)
			holders, delayed = view.Holders, view.DelayUntil
		}
		v.save(s, c)
		return nil
	})
	if err != nil {
		return dlm.Lease{}, false, err
	}
	switch out {
	case dlm.Granted:
		return lease, false, nil
	case dlm.Replayed:
		return lease, true, nil
	case dlm.Conflict:
		return dlm.Lease{}, false, conflict(holders, delayed)
	}
	if waiter.ID != req.ID {
		// A retry took over the queue entry of an earlier request: listen
		// on that entry, then look whether it was granted meanwhile.
		// (The new subscription comes first, so that the feed never
		// finds nobody parked here and stops following the log.)
		old := sub
		sub = e.waiters.subscribe(waiter.ID, req)
		e.waiters.unsubscribe(old)
		if ls, ok, err := e.liveLeases(ctx, []dlm.Waiter{waiter}); err != nil || ok {
			return first(ls), ok, err
		}
		replayed = true
	}
	leases, outcome, err := e.park(ctx, req, []dlm.Waiter{waiter}, sub, start.Add(req.Wait))
	if e.opts.Observer != nil {
		e.opts.Observer.Waited(e.now().Sub(start), outcome)
	}
	return first(leases), replayed && err == nil, err
}

// first is the lease of a one-lock wait, if any.
func first(ls []dlm.Lease) dlm.Lease {
	if len(ls) == 0 {
		return dlm.Lease{}
	}
	return ls[0]
}

// conflict is the lock_conflict error of a lock held by holders, or in a
// lock-delay until delayed (if that is not zero).
func conflict(holders []dlm.Lease, delayed time.Time) *dlm.Error {
	msg := "lock is held"
	if !delayed.IsZero() {
		msg = "lock is in a lock-delay until " + delayed.UTC().Format(time.RFC3339Nano)
	}
	return &dlm.Error{Code: dlm.CodeLockConflict, Message: msg, Holders: holders}
}

// checkUsage enforces the per-tenant caps on a new lease or a new waiter,
// given the tenant's usage before the decision.
func (e *Engine) checkUsage(leases, waiters int64, out dlm.Outcome, newWaiter bool) error {
	if out == dlm.Granted && leases >= e.opts.MaxLeasesPerTenant {
		return dlm.Errorf(dlm.CodeLimitExceeded, "tenant holds %d leases, the most allowed", leases)
	}
	if newWaiter && waiters >= e.opts.MaxWaitersPerTenant {
		return dlm.Errorf(dlm.CodeLimitExceeded, "tenant has %d waiters queued, the most allowed", waiters)
	}
	return nil
}

// park waits for the grant of the queued entries ws until deadline, ctx's
// end or Close, and takes them out of the queue if it gives up. ws is one
// waiter, or the entries of a multi-lock acquire, which are granted in one
// commit, so that the grant of the first stands for all. outcome says which
// ended the wait; a grant found while leaving the queue counts as granted.
func (e *Engine) park(ctx context.Context, req dlm.Request, ws []dlm.Waiter, sub *subscription, deadline time.Time) (_ []dlm.Lease, outcome WaitOutcome, _ error) {
	timer := e.opts.Clock.NewTimer(deadline.Sub(e.now()))
	defer timer.Stop()
	var poll <-chan time.Time
	if e.opts.WaitPoll > 0 {
		t := time.NewTicker(e.opts.WaitPoll)
		defer t.Stop()
		poll = t.C
	}
	for {
		select {
		case l := <-sub.lease:
			if len(ws) == 1 {
				return []dlm.Lease{l}, WaitGranted, nil
			}
		case <-sub.check:
		case <-poll:
		case <-timer.C():
			leases, granted, blocked, err := e.leaveQueue(ws, req.ID)
			if err == nil && granted {
				return leases, WaitGranted, nil
			}
			if err != nil {
				return nil, WaitTimedOut, err
			}
			blocked.Code, blocked.Message = dlm.CodeWaitTimeout, "waited "+req.Wait.String()+" without a grant"
			return nil, WaitTimedOut, blocked
		case <-ctx.Done():
			leases, granted, _, err := e.leaveQueue(ws, req.ID)
			revoked := errors.Is(context.Cause(ctx), ErrKeyRevoked)
			if err == nil && granted && (req.IdempotencyKey == "" || revoked) {
				// Nobody can learn these leases' IDs any more, or nobody
				// may: give them back.
				for _, l := range leases {
					_, rerr := e.Release(context.WithoutCancel(ctx), req.Tenant, l.ID)
					err = errors.Join(err, rerr)
				}
			}
			return nil, WaitCancelled, errors.Join(context.Cause(ctx), err)
		case <-e.closing:
			leases, granted, _, err := e.leaveQueue(ws, req.ID)
			if err == nil && granted {
				return leases, WaitGranted, nil
			}
			if err != nil {
				return nil, WaitShutdown, err
			}
			return nil, WaitShutdown, errShuttingDown
		}
		if leases, ok, err := e.liveLeases(ctx, ws); err == nil && ok {
			return leases, WaitGranted, nil
		}
	}
}

// leaveQueue withdraws the entries ws in one decision if ticket still owns
// them. If they were granted in the meantime it returns their leases and
// granted true — even if the leases have already ended again (say,
// force-released before the waiter looked): the grant happened, and the
// leases' own calls will say how they ended. A lease that has already run
// out is not returned, though: no answer carries an expires_at in the past.
// If they were not granted, blocked is a lock_conflict with the holders of
// a lock still in the way (named, for a multi-lock acquire).
func (e *Engine) leaveQueue(ws []dlm.Waiter, ticket string) (leases []dlm.Lease, granted bool, blocked *dlm.Error, err error) {
	need := dlm.Need{}
	ids := make([]string, len(ws))
	for i, w := range ws {
		need.Keys = append(need.Keys, w.Key)
		need.Leases = append(need.Leases, w.ID)
		ids[i] = w.ID
	}
	// The request's own context may be over: the cleanup runs anyway.
	err = e.write(context.Background(), need, func(v *view) error {
		ss := make([]*dlm.LockState, len(ws))
		cs := make([]*dlm.Change, len(ws))
		for i, w := range ws {
			ss[i], cs[i] = v.lock(w.Key), new(dlm.Change)
		}
		leases, granted = dlm.CancelGroup(v.now, ss, ids, ticket, cs)
		if !granted {
			if _, ended := v.findLease(ids[0]); ended != nil && ended.ExpiresAt.After(v.now) {
				for _, id := range ids {
					if l, ended := v.findLease(id); l != nil {
						leases = append(leases, *l)
					} else if ended != nil {
						leases = append(leases, ended.Lease)
					}
				}
				granted = true
			}
		}
		for i := range ss {
			if !granted && blocked == nil {
				if view := ss[i].View(v.now); len(view.Holders) > 0 || !view.DelayUntil.IsZero() {
					blocked = conflict(view.Holders, view.DelayUntil)
					blocked.Lock = named(ws, i)
				}
			}
			v.save(ss[i], cs[i])
		}
		return nil
	})
	if err == nil && !granted && blocked == nil {
		blocked = conflict(nil, time.Time{})
		blocked.Lock = named(ws, 0)
	}
	return leases, granted, blocked, err
}

// named is the name a conflict of entry i of ws carries: a multi-lock
// acquire's says which of its locks is in the way, one lock's needs none.
func named(ws []dlm.Waiter, i int) string {
	if len(ws) == 1 {
		return ""
	}
	return ws[i].Key.Name
}

// liveLeases returns the leases of the queued entries ws if they were
// granted and the first is still held, or ended but not yet run out (see
// leaveQueue).
func (e *Engine) liveLeases(ctx context.Context, ws []dlm.Waiter) (leases []dlm.Lease, ok bool, err error) {
	err = e.store.View(ctx, func(tx dlm.ReadTx) error {
		for _, w := range ws {
			found, ended, err := tx.FindLease(ctx, w.ID)
			switch {
			case err != nil:
				return err
			case found != nil:
				leases = append(leases, *found)
			case ended != nil:
				leases = append(leases, ended.Lease)
			default:
				return nil
			}
		}
		ok = leases[0].Live(tx.Now())
		return nil
	})
	return leases, ok, err
}
