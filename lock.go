package dlm

import (
	"slices"
	"time"
)

// LockState is everything about one lock that a decision needs: the fencing
// high-water mark, the holders and the FIFO queue of waiters.
//
// A store loads it in a transaction, calls one of its methods with the
// transaction's "now", and writes the resulting Change back. The methods never
// read a clock and never do I/O.
type LockState struct {
	Key Key
	// Token is the last fencing token issued on this lock, 0 if none. It
	// only grows.
	Token int64
	// Floor is the least token the next grant may carry. It is not stored:
	// whoever loads the state for a decision sets it (the engine: the
	// TokenFloor of the time it started).
	Floor   int64
	Holders []Lease
	Waiters []Waiter // ordered by Seq
	// DelayUntil, while in the future, is the end of a lock-delay (see
	// Terms.LockDelay): nobody is granted the lock before it. It is
	// cleared once it has passed.
	DelayUntil time.Time
}

// Change records what one operation did to a LockState, so that a store can
// persist exactly that and nothing else.
//
// A lease that expiry grants at an instant before now (see Expire) is a
// holder like any other for the rest of the operation: it may run out before
// now, or be renewed, released or force-released at now. It is then in
// Granted and also in Renewed or Ended, so a store must apply Granted first.
// Apart from that no lease or waiter ID appears in more than one list, and
// the lists may be applied in any order.
type Change struct {
	Granted  []Lease      // new holders, directly or from the queue
	Renewed  []Lease      // holders with a new expiry
	Ended    []EndedLease // holders that stopped holding
	Queued   []Waiter     // waiters added to the queue
	Retaken  []Waiter     // waiters taken over by a retried request
	Dequeued []Waiter     // waiters removed: granted, cancelled or timed out
	Events   []Event
	// Delayed reports that the lock's DelayUntil may have changed (a
	// lock-delay began or ran out): the store saves the state's DelayUntil.
	Delayed bool
}

// Empty reports whether c records nothing.
func (c *Change) Empty() bool {
	return !c.Delayed && len(c.Granted)+len(c.Renewed)+len(c.Ended)+len(c.Queued)+len(c.Retaken)+len(c.Dequeued)+len(c.Events) == 0
}

// Request is an acquire as the core sees it: validated, with the ID the lease
// or waiter will get chosen by the caller.
type Request struct {
	ID             string // lease ID if granted, waiter ID and ticket if queued
	Tenant         string
	Key            Key
	Mode           Mode
	HolderID       string
	TTL            time.Duration
	Wait           time.Duration // 0: try once
	IdempotencyKey string
	Terms
}

// Outcome is how an acquire ended.
type Outcome uint8

// Outcomes of LockState.Acquire.
const (
	Granted  Outcome = 1 // a new lease
	Replayed Outcome = 2 // the live lease of an earlier request with the same idempotency key
	Conflict Outcome = 3 // not compatible and not allowed to wait
	Queued   Outcome = 4 // a waiter was queued (or taken over)
)

// Acquire tries to grant r at now. If it cannot and r may wait, it queues r
// (or, for a retried idempotent request, takes over its earlier queue entry).
//
// It returns the lease for Granted and Replayed, the waiter for Queued, and
// an idempotency_key_reused error when the key names a different request:
// another mode, holder or TTL than the one first made with it.
//
// A semaphore request (r.Limit > 0) on a lock held or queued for with
// another limit, or a request without one on a semaphore, is an
// invalid_argument error naming limit.
func (s *LockState) Acquire(now time.Time, r Request, c *Change) (Outcome, Lease, Waiter, error) {
	s.Expire(now, c)
	if r.IdempotencyKey != "" {
		if h, err := s.idempotentHolder(r); h != nil || err != nil {
			if err != nil {
				return 0, Lease{}, Waiter{}, err
			}
			return Replayed, *h, Waiter{}, nil
		}
		if w, err := s.idempotentWaiter(r); w != nil || err != nil {
			if err != nil {
				return 0, Lease{}, Waiter{}, err
			}
			if r.Wait <= 0 {
				// Tried once: not granted yet, and the queue entry
				// stays with the request that waits on it.
				return Conflict, Lease{}, Waiter{}, nil
			}
			s.retake(now, w, r.ID, r.Wait, c)
			return Queued, Lease{}, *w, nil
		}
	}
	if err := s.CheckLimit(r.Limit); err != nil {
		return 0, Lease{}, Waiter{}, err
	}
	if len(s.Waiters) == 0 && s.grantable(now, r.Mode, r.Limit) {
		return Granted, s.grant(now, r, c), Waiter{}, nil
	}
	if r.Wait <= 0 {
		return Conflict, Lease{}, Waiter{}, nil
	}
	return Queued, Lease{}, s.queue(now, r, r.ID, "", nil, c), nil
}

// idempotentHolder returns the holder made with r's idempotency key, if
// any, or an error if it was made by another request. A request is
// compared with what was asked, not with the lease as renewals left it.
func (s *LockState) idempotentHolder(r Request) (*Lease, error) {
	for i := range s.Holders {
		h := &s.Holders[i]
		if h.Tenant == r.Tenant && h.IdempotencyKey == r.IdempotencyKey {
			if h.Mode != r.Mode || h.HolderID != r.HolderID || h.RequestedTTL != r.TTL {
				return nil, reusedKey()
			}
			return h, nil
		}
	}
	return nil, nil
}

// idempotentWaiter is idempotentHolder for the queue.
func (s *LockState) idempotentWaiter(r Request) (*Waiter, error) {
	for i := range s.Waiters {
		w := &s.Waiters[i]
		if w.Tenant == r.Tenant && w.IdempotencyKey == r.IdempotencyKey {
			if w.Mode != r.Mode || w.HolderID != r.HolderID || w.TTL != r.TTL {
				return nil, reusedKey()
			}
			return w, nil
		}
	}
	return nil, nil
}

// retake hands the queue entry w to the retried request ticket: it keeps
// its place, with a new deadline.
func (s *LockState) retake(now time.Time, w *Waiter, ticket string, wait time.Duration, c *Change) {
	w.Ticket = ticket
	w.Deadline = now.Add(wait)
	c.Retaken = append(c.Retaken, *w)
}

// queue appends r to the queue for the request ticket, as an entry of
// group if that is not "".
func (s *LockState) queue(now time.Time, r Request, ticket, group string, keys []Key, c *Change) Waiter {
	w := Waiter{
		ID: r.ID, Tenant: r.Tenant, Key: s.Key, Mode: r.Mode,
		Seq: 1, HolderID: r.HolderID, TTL: r.TTL, IdempotencyKey: r.IdempotencyKey,
		Ticket: ticket, QueuedAt: now, Deadline: now.Add(r.Wait), Terms: r.Terms,
		Group: group, GroupKeys: keys,
	}
	if n := len(s.Waiters); n > 0 {
		w.Seq = s.Waiters[n-1].Seq + 1
	}
	s.Waiters = append(s.Waiters, w)
	c.Queued = append(c.Queued, w)
	c.Events = append(c.Events, Event{Type: EventWaiting, Key: s.Key, HolderID: w.HolderID, Mode: w.Mode, At: now})
	return w
}

// CheckLimit refuses a request with semaphore limit (0: none) if the lock
// is held or queued for with another: a lock's holders and waiters all
// agree on its limit.
func (s *LockState) CheckLimit(limit int) error {
	have, ok := 0, false
	if len(s.Holders) > 0 {
		have, ok = s.Holders[0].Limit, true
	} else if len(s.Waiters) > 0 {
		have, ok = s.Waiters[0].Limit, true
	}
	if !ok || have == limit {
		return nil
	}
	if have == 0 {
		return Invalid("limit", "lock %q is held or queued for without a limit", s.Key.Name)
	}
	return Invalid("limit", "lock %q is a semaphore of %d: ask with limit %d", s.Key.Name, have, have)
}

func reusedKey() error {
	return Errorf(CodeIdempotencyKeyReused, "idempotency key was used for a different request")
}

// WouldGrant reports whether an acquire in mode m with semaphore limit
// (0: none) would be granted at now, without changing s (a dry run). Like
// Acquire, it first lets expiry grant the waiters that a holder past its
// expiry was blocking.
func (s *LockState) WouldGrant(now time.Time, m Mode, limit int) bool {
	v := s.clone()
	v.Expire(now, &Change{})
	return len(v.Waiters) == 0 && v.CheckLimit(limit) == nil && v.grantable(now, m, limit)
}

func (s *LockState) clone() LockState {
	v := *s
	v.Holders, v.Waiters = slices.Clone(s.Holders), slices.Clone(s.Waiters)
	return v
}

// View returns a copy of s as it stands at now: expired holders and waiters
// past their deadline are left out, and no waiter is granted. Reads use it
// so that an expired lease is never shown as held.
func (s *LockState) View(now time.Time) LockState {
	v := LockState{Key: s.Key, Token: s.Token, Holders: []Lease{}, Waiters: []Waiter{}}
	if now.Before(s.DelayUntil) {
		v.DelayUntil = s.DelayUntil
	}
	for _, h := range s.Holders {
		if h.Live(now) {
			v.Holders = append(v.Holders, h)
		}
	}
	for _, w := range s.Waiters {
		if now.Before(w.Deadline) {
			v.Waiters = append(v.Waiters, w)
		}
	}
	return v
}

// Renew extends the live lease id to now+ttl (ttl 0: the lease's own TTL),
// or to its MaxHold if that comes first. It reports false if id holds
// nothing at now.
func (s *LockState) Renew(now time.Time, id string, ttl time.Duration, c *Change) (Lease, bool) {
	s.Expire(now, c)
	i := s.Holder(id)
	if i < 0 {
		return Lease{}, false
	}
	h := &s.Holders[i]
	if ttl > 0 {
		h.TTL = ttl
	}
	h.ExpiresAt = h.expiry(h.AcquiredAt, now, h.TTL)
	c.Renewed = append(c.Renewed, *h)
	c.Events = append(c.Events, leaseEvent(EventRenewed, h, now))
	return *h, true
}

// Release ends the live lease id and grants the waiters it was blocking. It
// reports false if id holds nothing at now.
func (s *LockState) Release(now time.Time, id string, c *Change) (EndedLease, bool) {
	s.catchUp(now, c)
	i := s.Holder(id)
	if i < 0 {
		s.grantWaiters(now, c)
		return EndedLease{}, false
	}
	e := s.end(i, Released, now, c)
	s.grantWaiters(now, c)
	return e, true
}

// ForceRelease ends every live lease and grants the waiters.
func (s *LockState) ForceRelease(now time.Time, c *Change) []EndedLease {
	s.catchUp(now, c)
	ended := []EndedLease{}
	for len(s.Holders) > 0 {
		ended = append(ended, s.end(0, ForceReleased, now, c))
	}
	s.grantWaiters(now, c)
	return ended
}

// CancelWait removes the waiter id if ticket still owns it, then grants
// whoever that unblocks. If the waiter was already granted, it returns that
// lease and true.
func (s *LockState) CancelWait(now time.Time, id, ticket string, c *Change) (Lease, bool) {
	s.Expire(now, c)
	if i := s.Holder(id); i >= 0 {
		return s.Holders[i], true
	}
	for i := range s.Waiters {
		if s.Waiters[i].ID == id {
			if s.Waiters[i].Ticket == ticket {
				s.dequeue(i, c)
				s.grantWaiters(now, c)
			}
			break
		}
	}
	return Lease{}, false
}

// Expire ends the holders whose lease has run out by now, drops waiters past
// their deadline, and grants the waiters that this unblocks (see catchUp).
// Every write operation applies expiry first, so it happens lazily as well
// as by the sweeper.
func (s *LockState) Expire(now time.Time, c *Change) {
	s.catchUp(now, c)
	s.grantWaiters(now, c)
}

// catchUp takes the lease expiries and waiter deadlines due by now in time
// order, one instant at a time. At each instant before now it ends what runs
// out then, drops the waiters whose deadline has come, and grants the
// waiters this unblocks. A waiter whose turn came before its deadline is
// granted even if nothing touched the lock until after it, but its lease
// starts now, when the grant is decided: a lease is never answered already
// run out (or backdated into a past its holder never had). So a late grant
// holds the lock from now on, and the waiters behind it wait for it as they
// would for any holder.
//
// At now itself it only ends and drops: Expire grants next, and release and
// force-release change the holders first.
func (s *LockState) catchUp(now time.Time, c *Change) {
	for t := s.NextDue(); !t.IsZero() && !t.After(now); t = s.NextDue() {
		s.dropDue(t, c)
		if t.Before(now) {
			s.grantWaiters(now, c)
		}
	}
}

// dropDue ends the holders whose lease has run out at t, drops the waiters
// whose deadline has come, and clears a lock-delay that is over.
func (s *LockState) dropDue(t time.Time, c *Change) {
	if !s.DelayUntil.IsZero() && !t.Before(s.DelayUntil) {
		s.DelayUntil = time.Time{}
		c.Delayed = true
	}
	for i := 0; i < len(s.Holders); {
		if s.Holders[i].Live(t) {
			i++
			continue
		}
		s.end(i, Expired, t, c)
	}
	for i := 0; i < len(s.Waiters); {
		if t.Before(s.Waiters[i].Deadline) {
			i++
			continue
		}
		s.dequeue(i, c)
	}
}

// NextDue returns the earliest time at which s changes by itself: a lease
// expiry, a waiter deadline or the end of a lock-delay. It returns the zero
// time if nothing is due.
func (s *LockState) NextDue() time.Time {
	t := s.DelayUntil
	for _, h := range s.Holders {
		if t.IsZero() || h.ExpiresAt.Before(t) {
			t = h.ExpiresAt
		}
	}
	for _, w := range s.Waiters {
		if t.IsZero() || w.Deadline.Before(t) {
			t = w.Deadline
		}
	}
	return t
}

// grantWaiters grants waiters from the head of the queue for as long as each
// is grantable, so consecutive shared waiters are granted together and
// nobody overtakes an earlier waiter. It stops at the entry of a
// multi-lock acquire, which only GrantGroup grants, with its other locks.
func (s *LockState) grantWaiters(now time.Time, c *Change) {
	for len(s.Waiters) > 0 {
		w := s.Waiters[0]
		if w.Group != "" || !s.grantable(now, w.Mode, w.Limit) {
			return
		}
		s.dequeue(0, c)
		s.grant(now, w.request(), c)
	}
}

// request is the acquire that w stands for.
func (w *Waiter) request() Request {
	return Request{
		ID: w.ID, Tenant: w.Tenant, Key: w.Key, Mode: w.Mode, HolderID: w.HolderID,
		TTL: w.TTL, IdempotencyKey: w.IdempotencyKey, Terms: w.Terms,
	}
}

// TokenFloor is the token floor of a process started at now (see
// LockState.Floor): the clock in whole seconds times 2^20. A store that lost
// the record of its last tokens (a restore from an old backup, a damaged
// journal accepted with data loss) is opened by a new process, whose grants
// then carry tokens above every token issued before, as long as the clock
// has not gone back: a lock's tokens count up by one from the floor of the
// process that first granted it, and no lock takes 2^20 grants a second.
// Within a process tokens stay consecutive, for checkers and humans alike.
// The floor stays below 2^53, which JavaScript reads exactly, until the
// year 2242.
func TokenFloor(now time.Time) int64 {
	return now.Unix() << 20
}

// grantable reports whether the holders leave room at now for one more
// lease in mode m with semaphore limit (0: none): no lock-delay in force,
// compatible with every holder, and fewer holders than the limit.
func (s *LockState) grantable(now time.Time, m Mode, limit int) bool {
	if now.Before(s.DelayUntil) || limit > 0 && len(s.Holders) >= limit {
		return false
	}
	for i := range s.Holders {
		if !Compatible(m, s.Holders[i].Mode) {
			return false
		}
	}
	return true
}

func (s *LockState) grant(now time.Time, r Request, c *Change) Lease {
	s.Token = max(s.Token+1, s.Floor)
	l := Lease{
		ID: r.ID, Tenant: r.Tenant, Key: s.Key, Mode: r.Mode, HolderID: r.HolderID,
		Token: s.Token, TTL: r.TTL, AcquiredAt: now, ExpiresAt: r.expiry(now, now, r.TTL),
		IdempotencyKey: r.IdempotencyKey, RequestedTTL: r.TTL, Terms: r.Terms,
	}
	s.Holders = append(s.Holders, l)
	c.Granted = append(c.Granted, l)
	c.Events = append(c.Events, leaseEvent(EventAcquired, &l, now))
	return l
}

func (s *LockState) end(i int, why EndReason, now time.Time, c *Change) EndedLease {
	e := EndedLease{Lease: s.Holders[i], Reason: why, EndedAt: now}
	t := EventReleased
	switch why {
	case Expired:
		// It ended when it ran out, not when somebody noticed.
		e.EndedAt = e.ExpiresAt
		t = EventExpired
	case ForceReleased:
		t = EventForceReleased
	}
	if why != Released && e.LockDelay > 0 {
		if until := e.EndedAt.Add(e.LockDelay); until.After(s.DelayUntil) {
			s.DelayUntil = until
			c.Delayed = true
		}
	}
	s.Holders = slices.Delete(s.Holders, i, i+1)
	c.Ended = append(c.Ended, e)
	c.Events = append(c.Events, leaseEvent(t, &e.Lease, e.EndedAt))
	return e
}

func (s *LockState) dequeue(i int, c *Change) {
	c.Dequeued = append(c.Dequeued, s.Waiters[i])
	s.Waiters = slices.Delete(s.Waiters, i, i+1)
}

// Holder returns the index in Holders of lease id, or -1 if it is not (or
// no longer) a holder.
func (s *LockState) Holder(id string) int {
	for i := range s.Holders {
		if s.Holders[i].ID == id {
			return i
		}
	}
	return -1
}

func leaseEvent(t EventType, l *Lease, now time.Time) Event {
	return Event{Type: t, Key: l.Key, HolderID: l.HolderID, Mode: l.Mode, Token: l.Token, At: now}
}
