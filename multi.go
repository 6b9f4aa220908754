package dlm

import "time"

// A multi-lock acquire asks for several locks at once, all or nothing.
//
// It is granted at once if every lock would grant its part on its own.
// Otherwise, if it may wait, it queues an entry on every lock in the same
// decision, all of one Group. An entry with a Group is never granted by its
// own lock (grantWaiters stops at it, so nobody overtakes it either): when
// it reaches the head of a queue and the lock could grant it (ReadyGroup),
// the caller loads all of the group's locks and calls GrantGroup, which
// grants every entry together once each is at the head of its queue and
// grantable there.
//
// This cannot deadlock: entries are queued atomically, so any two groups
// are queued in the same order on every lock they share, and the oldest
// group waiting can always be granted once the holders ahead of it leave.

// AcquireAll tries to grant rs[i] on ss[i] for every i, at now, or queues
// all of them if they may wait. cs[i] records what happened to ss[i]. The
// requests share Tenant, HolderID, TTL, Wait and Terms other than Limit; each
// names its own lock, ID, Mode, Limit and IdempotencyKey (one per lock, so
// that each lease can be found again on its own).
//
// The outcome is Granted (some leases may be replays of an earlier request
// with the same keys), Replayed (all are), Conflict (blocked is the index
// of a lock that refused) or Queued (the waiters, one per lock still to
// grant). leases[i] is set for Granted and Replayed, and for Queued where
// an earlier request's lease is still held.
func AcquireAll(now time.Time, ss []*LockState, rs []Request, cs []*Change) (out Outcome, leases []Lease, waiters []Waiter, blocked int, err error) {
	for i, s := range ss {
		s.Expire(now, cs[i])
	}
	leases = make([]Lease, len(ss))
	replayed := make([]bool, len(ss))
	var taken []*Waiter
	nreplayed := 0
	for i, s := range ss {
		if rs[i].IdempotencyKey == "" {
			continue
		}
		h, err := s.idempotentHolder(rs[i])
		if err != nil {
			return 0, nil, nil, i, err
		}
		if h != nil {
			leases[i], replayed[i] = *h, true
			nreplayed++
			continue
		}
		w, err := s.idempotentWaiter(rs[i])
		if err != nil {
			return 0, nil, nil, i, err
		}
		if w != nil {
			taken = append(taken, w)
		}
	}
	if nreplayed == len(ss) {
		return Replayed, leases, nil, 0, nil
	}
	if len(taken) > 0 {
		// An earlier request with these keys is queued: the retry takes
		// its entries over, as a single acquire does.
		if rs[0].Wait <= 0 {
			return Conflict, nil, nil, 0, nil
		}
		for _, w := range taken {
			i := indexOfKey(ss, w.Key)
			ss[i].retake(now, w, rs[0].ID, rs[0].Wait, cs[i])
			waiters = append(waiters, *w)
		}
		return Queued, leases, waiters, 0, nil
	}
	blocked = -1
	for i, s := range ss {
		if replayed[i] {
			continue
		}
		if err := s.CheckLimit(rs[i].Limit); err != nil {
			return 0, nil, nil, i, err
		}
		if blocked < 0 && (len(s.Waiters) > 0 || !s.grantable(now, rs[i].Mode, rs[i].Limit)) {
			blocked = i
		}
	}
	if blocked < 0 {
		for i, s := range ss {
			if !replayed[i] {
				leases[i] = s.grant(now, rs[i], cs[i])
			}
		}
		return Granted, leases, nil, 0, nil
	}
	if rs[0].Wait <= 0 {
		return Conflict, nil, nil, blocked, nil
	}
	var keys []Key
	group := ""
	for i, s := range ss {
		if !replayed[i] {
			keys = append(keys, s.Key)
			if group == "" {
				group = rs[i].ID
			}
		}
	}
	for i, s := range ss {
		if !replayed[i] {
			waiters = append(waiters, s.queue(now, rs[i], rs[0].ID, group, keys, cs[i]))
		}
	}
	return Queued, leases, waiters, blocked, nil
}

func indexOfKey(ss []*LockState, k Key) int {
	for i, s := range ss {
		if s.Key == k {
			return i
		}
	}
	return -1
}

// ReadyGroup returns the head of the queue if it is the entry of a
// multi-lock acquire that this lock could grant at now: its group may be
// grantable, and GrantGroup on the locks of its GroupKeys will tell.
func (s *LockState) ReadyGroup(now time.Time) (Waiter, bool) {
	if len(s.Waiters) == 0 {
		return Waiter{}, false
	}
	w := s.Waiters[0]
	return w, w.Group != "" && s.grantable(now, w.Mode, w.Limit)
}

// GrantGroup grants the entries of group on ss, the locks of its GroupKeys,
// if each is at the head of its queue and grantable at now, and then the
// waiters behind them that this allows. It reports whether it granted.
// cs[i] records what happened to ss[i].
func GrantGroup(now time.Time, ss []*LockState, group string, cs []*Change) bool {
	for i, s := range ss {
		s.Expire(now, cs[i])
	}
	for _, s := range ss {
		if w, ok := s.ReadyGroup(now); !ok || w.Group != group {
			return false
		}
	}
	for i, s := range ss {
		w := s.Waiters[0]
		s.dequeue(0, cs[i])
		s.grant(now, w.request(), cs[i])
	}
	for i, s := range ss {
		s.grantWaiters(now, cs[i])
	}
	return true
}

// CancelGroup withdraws the entries ids[i] from ss[i] if ticket still owns
// them, and grants the waiters that this unblocks. If the group was
// already granted, it returns the leases still held and true. A group is
// granted in one decision, so either all of its entries are queued or none
// is: withdrawing them lock by lock (CancelWait) withdraws them all.
func CancelGroup(now time.Time, ss []*LockState, ids []string, ticket string, cs []*Change) ([]Lease, bool) {
	var held []Lease
	for i, s := range ss {
		if l, ok := s.CancelWait(now, ids[i], ticket, cs[i]); ok {
			held = append(held, l)
		}
	}
	return held, len(held) > 0
}
