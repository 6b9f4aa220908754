package dlm_test

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/dlmhq/dlm"
)

// multiLocks is a small world of locks for multi-lock tests, with the
// caller's part of the engine: after every decision, the groups that
// reached the head of a queue are tried on all their locks (engine
// grantReadyGroups).
type multiLocks struct {
	t     *testing.T
	now   time.Time
	locks map[string]*dlm.LockState
	n     int
}

func newMultiLocks(t *testing.T, names ...string) *multiLocks {
	w := &multiLocks{t: t, now: fzStart, locks: map[string]*dlm.LockState{}}
	for _, n := range names {
		w.locks[n] = &dlm.LockState{Key: dlm.Key{Namespace: "acme", Name: n}}
	}
	return w
}

func (w *multiLocks) states(keys []dlm.Key) ([]*dlm.LockState, []*dlm.Change) {
	ss := make([]*dlm.LockState, len(keys))
	cs := make([]*dlm.Change, len(keys))
	for i, k := range keys {
		ss[i], cs[i] = w.locks[k.Name], new(dlm.Change)
	}
	return ss, cs
}

func (w *multiLocks) key(name string) dlm.Key { return w.locks[name].Key }

// acquireAll asks for names in order, exclusive, waiting wait.
func (w *multiLocks) acquireAll(holder string, wait time.Duration, names ...string) (dlm.Outcome, []dlm.Lease, []dlm.Waiter, int) {
	w.n++
	var keys []dlm.Key
	var rs []dlm.Request
	for i, n := range names {
		keys = append(keys, w.key(n))
		rs = append(rs, dlm.Request{ID: fmt.Sprintf("%s-%d-%d", holder, w.n, i), Tenant: "acme", Key: w.key(n),
			Mode: dlm.Exclusive, HolderID: holder, TTL: time.Minute, Wait: wait})
	}
	ss, cs := w.states(keys)
	out, leases, waiters, blocked, err := dlm.AcquireAll(w.now, ss, rs, cs)
	if err != nil {
		w.t.Fatal(err)
	}
	w.settle()
	return out, leases, waiters, blocked
}

func (w *multiLocks) acquire(holder string, wait time.Duration, name string) (dlm.Outcome, dlm.Lease) {
	w.n++
	r := dlm.Request{ID: fmt.Sprintf("%s-%d", holder, w.n), Tenant: "acme", Key: w.key(name),
		Mode: dlm.Exclusive, HolderID: holder, TTL: time.Minute, Wait: wait}
	out, l, _, err := w.locks[name].Acquire(w.now, r, new(dlm.Change))
	if err != nil {
		w.t.Fatal(err)
	}
	w.settle()
	return out, l
}

func (w *multiLocks) release(id string) {
	for _, s := range w.locks {
		if s.Holder(id) >= 0 {
			s.Release(w.now, id, new(dlm.Change))
		}
	}
	w.settle()
}

// settle grants every group that can be granted, as the engine's
// follow-up decisions do.
func (w *multiLocks) settle() {
	for again := true; again; {
		again = false
		for _, s := range w.locks {
			if g, ok := s.ReadyGroup(w.now); ok {
				ss, cs := w.states(g.GroupKeys)
				if dlm.GrantGroup(w.now, ss, g.Group, cs) {
					again = true
				}
			}
		}
	}
}

func (w *multiLocks) holder(name string) string {
	s := w.locks[name]
	if len(s.Holders) == 0 {
		return ""
	}
	return s.Holders[0].HolderID
}

func TestAcquireAllIsAllOrNothing(t *testing.T) {
	w := newMultiLocks(t, "a", "b", "c")
	_, x := w.acquire("x", 0, "b")
	before := *w.locks["a"]
	out, _, _, blocked := w.acquireAll("m", 0, "a", "b", "c")
	if out != dlm.Conflict || blocked != 1 {
		t.Fatalf("with b held: %v, blocked %d; want a conflict on b (1)", outcomeName(out), blocked)
	}
	if got := w.locks["a"]; len(got.Holders) != 0 || got.Token != before.Token {
		t.Fatalf("a was changed by a refused multi-lock acquire: %+v", got)
	}
	w.release(x.ID)
	out, leases, _, _ := w.acquireAll("m", 0, "a", "b", "c")
	if out != dlm.Granted || len(leases) != 3 {
		t.Fatalf("with all free: %v %d leases", outcomeName(out), len(leases))
	}
	for i, n := range []string{"a", "b", "c"} {
		if leases[i].Key.Name != n || w.holder(n) != "m" || !leases[i].AcquiredAt.Equal(w.now) {
			t.Fatalf("lease %d: %+v; want m holding %s from now", i, leases[i], n)
		}
	}
}

func TestGroupWaitsForAllItsLocksAndKeepsItsPlace(t *testing.T) {
	w := newMultiLocks(t, "a", "b")
	_, xa := w.acquire("x", 0, "a")
	_, yb := w.acquire("y", 0, "b")
	if out, _, ws, _ := w.acquireAll("m", time.Minute, "a", "b"); out != dlm.Queued || len(ws) != 2 || ws[0].Group == "" || ws[0].Group != ws[1].Group {
		t.Fatalf("multi-lock behind holders: %v %+v; want queued on both, one group", outcomeName(out), ws)
	}
	// z queues on a behind the group.
	if out, _ := w.acquire("z", time.Minute, "a"); out != dlm.Queued {
		t.Fatalf("z: %v", outcomeName(out))
	}
	w.release(xa.ID)
	if w.holder("a") != "" {
		t.Fatalf("a went to %q while the group still waits for b; nobody may overtake it", w.holder("a"))
	}
	w.release(yb.ID)
	if w.holder("a") != "m" || w.holder("b") != "m" {
		t.Fatalf("after both released: a held by %q, b by %q; want the group", w.holder("a"), w.holder("b"))
	}
	ta, tb := w.locks["a"].Holders[0], w.locks["b"].Holders[0]
	if !ta.AcquiredAt.Equal(tb.AcquiredAt) {
		t.Fatalf("group granted at %v and %v; want one instant", ta.AcquiredAt, tb.AcquiredAt)
	}
	w.release(ta.ID)
	if w.holder("a") != "z" {
		t.Fatalf("after the group released a: held by %q, want z", w.holder("a"))
	}
}

func TestOppositeOrderGroupsDoNotDeadlock(t *testing.T) {
	w := newMultiLocks(t, "a", "b")
	_, xa := w.acquire("x", 0, "a")
	w.acquireAll("g1", time.Minute, "a", "b")
	w.acquireAll("g2", time.Minute, "b", "a")
	w.release(xa.ID)
	if w.holder("a") != "g1" || w.holder("b") != "g1" {
		t.Fatalf("a: %q, b: %q; want g1, the first queued, on both", w.holder("a"), w.holder("b"))
	}
	w.release(w.locks["a"].Holders[0].ID)
	w.release(w.locks["b"].Holders[0].ID)
	if w.holder("a") != "g2" || w.holder("b") != "g2" {
		t.Fatalf("a: %q, b: %q; want g2", w.holder("a"), w.holder("b"))
	}
}

func TestCancelGroupWithdrawsEveryEntry(t *testing.T) {
	w := newMultiLocks(t, "a", "b")
	_, xa := w.acquire("x", 0, "a")
	_, _, ws, _ := w.acquireAll("m", time.Minute, "a", "b")
	if out, _ := w.acquire("z", time.Minute, "b"); out != dlm.Queued {
		t.Fatalf("z on b behind the group: %v", outcomeName(out))
	}
	ss, cs := w.states([]dlm.Key{w.key("a"), w.key("b")})
	if _, granted := dlm.CancelGroup(w.now, ss, []string{ws[0].ID, ws[1].ID}, ws[0].Ticket, cs); granted {
		t.Fatal("cancel reports a grant")
	}
	if len(w.locks["a"].Waiters) != 0 || w.holder("b") != "z" {
		t.Fatalf("after cancel: a waiters %d, b held by %q; want none and z", len(w.locks["a"].Waiters), w.holder("b"))
	}
	w.release(xa.ID)
}

// TestMultiLockRandom drives single and multi-lock acquires, releases and
// the clock at random over four locks, and checks after every step: no two
// holders of a lock, a group's leases granted together or not at all, and
// that once every lease is released, what queued is granted (a deadlock
// would leave waiters queued on free locks).
func TestMultiLockRandom(t *testing.T) {
	names := []string{"a", "b", "c", "d"}
	for seed := range uint64(200) {
		rng := rand.New(rand.NewPCG(seed, 1))
		w := newMultiLocks(t, names...)
		for step := range 60 {
			switch rng.IntN(4) {
			case 0:
				perm := rng.Perm(len(names))[:2+rng.IntN(3)]
				var pick []string
				for _, i := range perm {
					pick = append(pick, names[i])
				}
				w.acquireAll(fmt.Sprintf("g%d", step), time.Duration(rng.IntN(2))*time.Minute, pick...)
			case 1:
				w.acquire(fmt.Sprintf("s%d", step), time.Duration(rng.IntN(2))*time.Minute, names[rng.IntN(len(names))])
			case 2:
				if s := w.locks[names[rng.IntN(len(names))]]; len(s.Holders) > 0 {
					w.release(s.Holders[0].ID)
				}
			case 3:
				w.now = w.now.Add(time.Duration(rng.IntN(20)) * time.Second)
				for _, s := range w.locks {
					s.Expire(w.now, new(dlm.Change))
				}
				w.settle()
			}
			checkMultiLocks(t, w, seed, step)
		}
		// Drain: release whatever is held until nothing is; every waiter
		// must then have been granted (and released) or be gone.
		for range 1000 {
			released := false
			for _, n := range names {
				if s := w.locks[n]; len(s.Holders) > 0 {
					w.release(s.Holders[0].ID)
					released = true
				}
			}
			if !released {
				break
			}
		}
		for _, n := range names {
			if s := w.locks[n]; len(s.Waiters) > 0 {
				t.Fatalf("seed %d: %s has %d waiters (head %s of group %q) but no holder: stuck", seed, n, len(s.Waiters), s.Waiters[0].HolderID, s.Waiters[0].Group)
			}
		}
	}
}

func checkMultiLocks(t *testing.T, w *multiLocks, seed uint64, step int) {
	t.Helper()
	held := map[string]time.Time{} // holder -> when granted
	for n, s := range w.locks {
		if len(s.Holders) > 1 {
			t.Fatalf("seed %d step %d: %s has %d exclusive holders", seed, step, n, len(s.Holders))
		}
		for _, h := range s.Holders {
			if at, ok := held[h.HolderID]; ok && !at.Equal(h.AcquiredAt) {
				t.Fatalf("seed %d step %d: group %s granted at %v and at %v", seed, step, h.HolderID, at, h.AcquiredAt)
			}
			held[h.HolderID] = h.AcquiredAt
		}
		// The head of a queue waits only for a holder, or (a group) for
		// another of its locks.
		if len(s.Waiters) > 0 && len(s.Holders) == 0 && s.Waiters[0].Group == "" {
			t.Fatalf("seed %d step %d: %s is free but its head waiter %s was not granted", seed, step, n, s.Waiters[0].HolderID)
		}
	}
	for n, s := range w.locks {
		for _, wt := range s.Waiters {
			if _, ok := held[wt.HolderID]; ok && wt.Group != "" {
				t.Fatalf("seed %d step %d: group %s holds some locks and still waits on %s", seed, step, wt.HolderID, n)
			}
		}
	}
}
