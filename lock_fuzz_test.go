package dlm_test

// FuzzLockState drives dlm.LockState and a deliberately simple reference
// model of one lock (refLock below) with the same random sequence of
// operations on a fake clock, and fails as soon as they disagree on anything a
// caller or a store can see: outcomes, leases, waiters, tokens, the Change
// handed to the store, and the events. It also checks the invariants of
// RELIABILITY.md's guarantees directly on the state after every step, and that applying each Change to
// the state before it gives the state after it (which is what a store does
// when it persists a Change instead of the state).

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dlmhq/dlm"
	gocmp "github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// fzCmp compares model values: nil and empty lists are the same.
var fzCmp = []gocmp.Option{cmpopts.EquateEmpty(), gocmp.AllowUnexported(refChange{}, refEnded{}, refEvent{})}

// fzStart is the fake clock's start. Nanoseconds are set so that a TTL that
// lands exactly on a second boundary is not special.
var fzStart = time.Date(2026, 11, 26, 10, 0, 0, 123456789, time.UTC)

var fzKey = dlm.Key{Namespace: "acme", Name: "fuzz/lock"}

// Small domains make collisions (same holder, same idempotency key, same
// tenant) common, which is where the interesting cases are.
var (
	fzTenants = []string{"acme", "acme", "beta"}
	fzHolders = []string{"h1", "h2", "h3"}
	fzIdem    = []string{"", "", "k1", "k2"}
	fzTTLs    = []time.Duration{100 * time.Millisecond, 150 * time.Millisecond, time.Second, 5 * time.Second}
	fzWaits   = []time.Duration{0, 0, 50 * time.Millisecond, 100 * time.Millisecond, time.Second, 10 * time.Second}
	fzLimits  = []int{0, 0, 2, 3} // for shared requests only
	fzDelays  = []time.Duration{0, 0, 50 * time.Millisecond, time.Second}
	fzHolds   = []time.Duration{0, 0, 150 * time.Millisecond, 2 * time.Second}
	// fzSteps are the clock advances; -1 and -2 mean "exactly to the next
	// due time" and "1ns before it".
	fzSteps = []time.Duration{time.Nanosecond, time.Millisecond, 37 * time.Millisecond, 100 * time.Millisecond, time.Second, -1, -2, 10 * time.Second}
)

func FuzzLockState(f *testing.F) {
	for _, seed := range fzSeeds {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		runLockFuzz(t, data)
	})
}

// fzSeeds are hand-written scenarios; the committed corpus under
// testdata/fuzz/FuzzLockState adds generated ones.
var fzSeeds = [][]byte{
	{},
	// acquire X, acquire X (conflict), release, acquire again
	{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0},
	// shared, shared, exclusive waits, shared waits, advance to due
	{0, 1, 0, 0, 3, 0, 0, 1, 1, 1, 3, 0, 0, 0, 2, 0, 3, 4, 0, 1, 0, 0, 3, 4, 7, 5, 7, 5, 7, 5},
	// idempotent acquire, retry, renew with a new ttl, retry again
	{0, 0, 0, 2, 2, 0, 8, 0, 1, 1, 0, 8, 0, 8, 0},
	// X held for 100ms, X and S wait; the first sweep comes a second
	// later and hands on to X, from then on
	{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 4, 0, 0, 0, 1, 2, 2, 5, 0, 7, 4, 6},
}

// fzOp names the operations a fuzz input can choose from.
const (
	opAcquire = iota
	opRetry   // resend an earlier request with a new ID
	opRenew
	opRelease
	opForce
	opCancel
	opExpire
	opAdvance
	opView
	opCount
)

// fzReader hands out bytes of the fuzz input; past its end it returns 0s and
// reports done.
type fzReader struct {
	data []byte
	i    int
}

func (r *fzReader) done() bool { return r.i >= len(r.data) }

func (r *fzReader) byte() int {
	if r.i >= len(r.data) {
		return 0
	}
	b := r.data[r.i]
	r.i++
	return int(b)
}

func (r *fzReader) pick(n int) int { return r.byte() % n }

// lockFuzz is one run: the system under test, the model, and what both
// have been asked so far.
type lockFuzz struct {
	t      *testing.T
	now    time.Time
	s      *dlm.LockState
	m      *refLock
	reqs   []dlm.Request // every acquire sent, for retries
	ids    []string      // every lease/waiter ID and ticket ever used
	step   int
	log    []fzLogLine // what happened, for the failure message
	issued []int64     // every token granted, in order
}

// maxFuzzSteps bounds one input's length, so that one execution stays well
// under a millisecond and input minimisation stays quick.
const maxFuzzSteps = 200

func runLockFuzz(t *testing.T, data []byte) {
	fz := &lockFuzz{
		t:   t,
		now: fzStart,
		s:   &dlm.LockState{Key: fzKey},
		m:   &refLock{},
	}
	// A store loads locks that were used before: start from a token above 0
	// now and then, as after a restart.
	r := &fzReader{data: data}
	if len(data) > 0 && data[0]&0x80 != 0 {
		fz.s.Token, fz.m.token = 1000, 1000
	}
	for n := 0; !r.done() && n < maxFuzzSteps; n++ {
		fz.stepOnce(r)
	}
}

// fzLogLine is one step of the history, formatted only on failure.
type fzLogLine struct {
	step   int
	at     time.Duration
	format string
	args   []any
}

func (fz *lockFuzz) fail(format string, args ...any) {
	var b strings.Builder
	for _, l := range fz.log {
		fmt.Fprintf(&b, "\n  %3d %8s ", l.step, l.at)
		fmt.Fprintf(&b, l.format, l.args...)
	}
	fz.t.Fatalf("step %d: %s\nhistory (step, clock, operation -> result):%s", fz.step, fmt.Sprintf(format, args...), b.String())
}

func (fz *lockFuzz) logf(format string, args ...any) {
	fz.log = append(fz.log, fzLogLine{fz.step, fz.now.Sub(fzStart), format, args})
}

// anyID picks an ID that was used (or one that never was).
func (fz *lockFuzz) anyID(r *fzReader) string {
	i := r.pick(len(fz.ids) + 1)
	if i == len(fz.ids) {
		return "never-issued"
	}
	return fz.ids[i]
}

func (fz *lockFuzz) stepOnce(r *fzReader) {
	fz.step++
	before := cloneState(fz.s)
	var c dlm.Change
	var want refChange
	switch r.pick(opCount) {
	case opAcquire:
		req := dlm.Request{
			ID:             fmt.Sprintf("r%d", fz.step),
			Tenant:         fzTenants[r.pick(len(fzTenants))],
			Key:            fzKey,
			Mode:           dlm.Mode(1 + r.pick(2)),
			HolderID:       fzHolders[r.pick(len(fzHolders))],
			TTL:            fzTTLs[r.pick(len(fzTTLs))],
			Wait:           fzWaits[r.pick(len(fzWaits))],
			IdempotencyKey: fzIdem[r.pick(len(fzIdem))],
		}
		// The lock features come after the fields above, so that the
		// corpus written before them still decodes to the same requests.
		req.Terms = dlm.Terms{Limit: fzLimits[r.pick(len(fzLimits))], LockDelay: fzDelays[r.pick(len(fzDelays))], MaxHold: fzHolds[r.pick(len(fzHolds))]}
		if req.Mode != dlm.Shared {
			req.Limit = 0
		}
		fz.acquire(req, &c, &want)
	case opRetry:
		if len(fz.reqs) == 0 {
			return
		}
		req := fz.reqs[r.pick(len(fz.reqs))]
		req.ID = fmt.Sprintf("r%d", fz.step)
		// A retry may wait or not, whatever the first try did.
		if r.pick(2) == 0 {
			req.Wait = fzWaits[r.pick(len(fzWaits))]
		}
		fz.acquire(req, &c, &want)
	case opRenew:
		id := fz.anyID(r)
		ttl := time.Duration(0)
		if r.pick(2) == 1 {
			ttl = fzTTLs[r.pick(len(fzTTLs))]
		}
		got, ok := fz.s.Renew(fz.now, id, ttl, &c)
		wl, wok := fz.m.renew(fz.now, id, ttl, &want)
		fz.logf("renew %s ttl=%v -> %v", id, ttl, ok)
		if ok != wok {
			fz.fail("renew %s: ok=%v, model says %v", id, ok, wok)
		}
		if ok {
			fz.sameLease("renew", got, wl)
		}
	case opRelease:
		id := fz.anyID(r)
		got, ok := fz.s.Release(fz.now, id, &c)
		wl, wok := fz.m.release(fz.now, id, &want)
		fz.logf("release %s -> %v", id, ok)
		if ok != wok {
			fz.fail("release %s: ok=%v, model says %v", id, ok, wok)
		}
		if ok {
			if got.Reason != dlm.Released || !got.EndedAt.Equal(fz.now) {
				fz.fail("release %s: ended %v at %v", id, got.Reason, got.EndedAt)
			}
			fz.sameLease("release", got.Lease, wl)
		}
	case opForce:
		got := fz.s.ForceRelease(fz.now, &c)
		wl := fz.m.forceRelease(fz.now, &want)
		fz.logf("force-release -> %d ended", len(got))
		if len(got) != len(wl) {
			fz.fail("force-release ended %d, model says %d", len(got), len(wl))
		}
		for i := range got {
			if got[i].Reason != dlm.ForceReleased {
				fz.fail("force-release: reason %v", got[i].Reason)
			}
			fz.sameLease("force-release", got[i].Lease, wl[i])
		}
	case opCancel:
		id := fz.anyID(r)
		ticket := fz.anyID(r)
		if r.pick(2) == 0 {
			ticket = fz.m.ticketOf(id) // usually the right one
		}
		got, ok := fz.s.CancelWait(fz.now, id, ticket, &c)
		wl, wok := fz.m.cancelWait(fz.now, id, ticket, &want)
		fz.logf("cancel-wait %s ticket=%s -> %v", id, ticket, ok)
		if ok != wok {
			fz.fail("cancel-wait %s: granted=%v, model says %v", id, ok, wok)
		}
		if ok {
			fz.sameLease("cancel-wait", got, wl)
		}
	case opExpire:
		// However late the sweep, what it grants starts now: no lease is
		// handed out already run out or backdated.
		fz.s.Expire(fz.now, &c)
		fz.m.settle(fz.now, &want)
		fz.logf("expire")
		for _, l := range c.Granted {
			if !l.AcquiredAt.Equal(fz.now) || !l.ExpiresAt.After(fz.now) {
				fz.fail("a sweep at %v granted %s from %v to %v; want from the sweep on", fz.now, l.ID, l.AcquiredAt, l.ExpiresAt)
			}
		}
	case opAdvance:
		d := fzSteps[r.pick(len(fzSteps))]
		if d < 0 {
			due := fz.m.nextDue()
			if !fz.s.NextDue().Equal(due) {
				fz.fail("NextDue = %v, model says %v", fz.s.NextDue(), due)
			}
			if d == -2 {
				due = due.Add(-time.Nanosecond)
			}
			if !due.After(fz.now) {
				return
			}
			d = due.Sub(fz.now)
		}
		fz.now = fz.now.Add(d)
		fz.logf("advance %v", d)
		return
	case opView:
		m := dlm.Mode(1 + r.pick(2))
		v := fz.s.View(fz.now)
		wv := fz.m.view(fz.now)
		fz.logf("view")
		if got := leasesOf(v.Holders); !slices.Equal(got, wv.holders) {
			fz.fail("View holders (-got +want):\n%s", gocmp.Diff(got, wv.holders, fzCmp...))
		}
		if got := waitersOf(v.Waiters); !slices.Equal(got, wv.waiters) {
			fz.fail("View waiters (-got +want):\n%s", gocmp.Diff(got, wv.waiters, fzCmp...))
		}
		if v.Token != fz.m.token {
			fz.fail("View token %d, model %d", v.Token, fz.m.token)
		}
		if !v.DelayUntil.Equal(wv.delayUntil) {
			fz.fail("View lock-delay until %v, model %v", v.DelayUntil, wv.delayUntil)
		}
		limit := 0
		if m == dlm.Shared {
			limit = fzLimits[r.pick(len(fzLimits))]
		}
		got := fz.s.WouldGrant(fz.now, m, limit)
		if want := fz.m.wouldGrant(fz.now, m, limit); got != want {
			fz.fail("WouldGrant(%v, limit %d) = %v, model says %v", m, limit, got, want)
		}
		if !stateEqual(before, fz.s) {
			fz.fail("View or WouldGrant changed the state")
		}
		return
	}
	fz.check(before, &c, &want)
}

// maxFuzzQueue bounds the holders and waiters of one run, to keep each step
// cheap: past it, new acquires neither queue nor share.
const maxFuzzQueue = 8

func (fz *lockFuzz) acquire(req dlm.Request, c *dlm.Change, want *refChange) {
	if len(fz.m.waiters) >= maxFuzzQueue {
		req.Wait = 0
	}
	if len(fz.m.holders) >= maxFuzzQueue {
		req.Mode = dlm.Exclusive
	}
	fz.reqs = append(fz.reqs, req)
	fz.ids = append(fz.ids, req.ID)
	out, l, w, err := fz.s.Acquire(fz.now, req, c)
	wout, wl, ww, werr := fz.m.acquire(fz.now, req, want)
	fz.logf("acquire %s %s/%s %v ttl=%v wait=%v idem=%q %+v -> %v %v", req.ID, req.Tenant, req.HolderID, req.Mode, req.TTL, req.Wait, req.IdempotencyKey, req.Terms, outcomeName(out), err)
	if (err == nil) != (werr == nil) || err != nil && dlm.ErrorCode(err) != dlm.ErrorCode(werr) {
		fz.fail("acquire %s: err %v, model says %v", req.ID, err, werr)
	}
	if err != nil {
		return
	}
	if out != wout {
		fz.fail("acquire %s: %v, model says %v", req.ID, outcomeName(out), outcomeName(wout))
	}
	switch out {
	case dlm.Granted, dlm.Replayed:
		fz.sameLease("acquire", l, wl)
		if out == dlm.Granted && l.ID != req.ID {
			fz.fail("granted lease %s, want the request's ID %s", l.ID, req.ID)
		}
	case dlm.Queued:
		if got := waiterOf(w); got != ww {
			fz.fail("queued waiter (-got +want):\n%s", gocmp.Diff(got, ww))
		}
	}
}

func (fz *lockFuzz) sameLease(what string, got dlm.Lease, want refLease) {
	if l := leaseOf(got); l != want {
		fz.fail("%s: lease (-got +want):\n%s", what, gocmp.Diff(l, want))
	}
	if got.Key != fzKey {
		fz.fail("%s: lease key %v", what, got.Key)
	}
}

// check compares the state and the change after a write operation with the
// model's and checks the invariants.
func (fz *lockFuzz) check(before *dlm.LockState, c *dlm.Change, want *refChange) {
	s, m := fz.s, fz.m
	if s.Token != m.token {
		fz.fail("token %d, model %d", s.Token, m.token)
	}
	if !s.DelayUntil.Equal(m.delayUntil) {
		fz.fail("lock-delay until %v, model %v", s.DelayUntil, m.delayUntil)
	}
	if !c.Delayed && !before.DelayUntil.Equal(s.DelayUntil) {
		fz.fail("Change.Delayed is not set, but the lock-delay went from %v to %v", before.DelayUntil, s.DelayUntil)
	}
	if got := leasesOf(s.Holders); !slices.Equal(got, m.holders) {
		fz.fail("holders (-got +want):\n%s", gocmp.Diff(got, m.holders, fzCmp...))
	}
	if got := waitersOf(s.Waiters); !slices.Equal(got, m.waiters) {
		fz.fail("waiters (-got +want):\n%s", gocmp.Diff(got, m.waiters, fzCmp...))
	}
	fz.checkChange(c, want)
	fz.checkInvariants(before, c)
	// A store persists the Change, not the state: the two must agree.
	applied := applyChange(before, c, s.DelayUntil)
	if !stateEqual(applied, s) {
		fz.fail("applying the Change to the state before does not give the state after:\napplied: %s\nstate:   %s", describeState(applied), describeState(s))
	}
}

func (fz *lockFuzz) checkChange(c *dlm.Change, want *refChange) {
	for _, l := range c.Granted {
		fz.issued = append(fz.issued, l.Token)
	}
	for _, e := range c.Events {
		if e.Key != fzKey || e.ID != 0 {
			fz.fail("event %+v: wrong key or an ID set by the core", e)
		}
	}
	if got := refChangeOf(c); !got.equal(want) {
		fz.fail("change (-got +want):\n%s", gocmp.Diff(got, *want, fzCmp...))
	}
}

// refChangeOf converts c for comparison with the model's.
func refChangeOf(c *dlm.Change) refChange {
	got := refChange{}
	for _, l := range c.Granted {
		got.granted = append(got.granted, leaseOf(l))
	}
	for _, l := range c.Renewed {
		got.renewed = append(got.renewed, leaseOf(l))
	}
	for _, e := range c.Ended {
		got.ended = append(got.ended, refEnded{leaseOf(e.Lease), e.Reason, e.EndedAt})
	}
	for _, w := range c.Queued {
		got.queued = append(got.queued, waiterOf(w))
	}
	for _, w := range c.Retaken {
		got.retaken = append(got.retaken, waiterOf(w))
	}
	for _, w := range c.Dequeued {
		got.dequeued = append(got.dequeued, w.ID)
	}
	for _, e := range c.Events {
		got.events = append(got.events, refEvent{e.Type, e.HolderID, e.Mode, e.Token, e.At})
	}
	return got
}

// checkInvariants checks the guarantees (RELIABILITY.md) on the state itself, independently of the
// model.
func (fz *lockFuzz) checkInvariants(before *dlm.LockState, c *dlm.Change) {
	s, now := fz.s, fz.now
	// After a write, every holder is live and every waiter before its
	// deadline: expiry is applied before any decision.
	for _, h := range s.Holders {
		if !h.Live(now) {
			fz.fail("holder %s kept past its expiry %v", h.ID, h.ExpiresAt)
		}
	}
	for _, w := range s.Waiters {
		if !now.Before(w.Deadline) {
			fz.fail("waiter %s kept past its deadline %v", w.ID, w.Deadline)
		}
	}
	// Safety: no conflicting holders.
	for i := range s.Holders {
		for j := i + 1; j < len(s.Holders); j++ {
			if !dlm.Compatible(s.Holders[i].Mode, s.Holders[j].Mode) {
				fz.fail("conflicting holders %s (%v) and %s (%v)", s.Holders[i].ID, s.Holders[i].Mode, s.Holders[j].ID, s.Holders[j].Mode)
			}
		}
	}
	// A semaphore never has more holders than its limit, and a lock's
	// holders and waiters agree on the limit.
	for _, h := range s.Holders {
		if h.Limit != s.Holders[0].Limit {
			fz.fail("holders with limits %d and %d", s.Holders[0].Limit, h.Limit)
		}
		if h.Limit > 0 && len(s.Holders) > h.Limit {
			fz.fail("%d holders of a semaphore of %d", len(s.Holders), h.Limit)
		}
		if h.MaxHold > 0 && h.ExpiresAt.After(h.AcquiredAt.Add(h.MaxHold)) {
			fz.fail("lease %s expires at %v, past its max hold from %v", h.ID, h.ExpiresAt, h.AcquiredAt)
		}
	}
	// Nothing is granted during a lock-delay.
	if now.Before(before.DelayUntil) && len(c.Granted) > 0 {
		fz.fail("lease %s granted at %v, in a lock-delay until %v", c.Granted[0].ID, now, before.DelayUntil)
	}
	// Fencing: every token granted is above every earlier one, and the
	// state's token is the last one issued.
	for i := 1; i < len(fz.issued); i++ {
		if fz.issued[i] <= fz.issued[i-1] {
			fz.fail("token %d issued after %d", fz.issued[i], fz.issued[i-1])
		}
	}
	if n := len(fz.issued); n > 0 && s.Token != fz.issued[n-1] {
		fz.fail("state token %d, last issued %d", s.Token, fz.issued[n-1])
	}
	if s.Token < before.Token {
		fz.fail("token went down from %d to %d", before.Token, s.Token)
	}
	// Holders are kept in token order (stores load them so), waiters in
	// strictly increasing Seq.
	for i := 1; i < len(s.Holders); i++ {
		if s.Holders[i].Token <= s.Holders[i-1].Token {
			fz.fail("holders out of token order: %d after %d", s.Holders[i].Token, s.Holders[i-1].Token)
		}
	}
	for i := 1; i < len(s.Waiters); i++ {
		if s.Waiters[i].Seq <= s.Waiters[i-1].Seq {
			fz.fail("waiters out of order: seq %d after %d", s.Waiters[i].Seq, s.Waiters[i-1].Seq)
		}
	}
	// Fairness: the head of the queue is blocked by a holder (otherwise it
	// should have been granted), and only a prefix of the queue as it was
	// was granted from it.
	if len(s.Waiters) > 0 {
		head := s.Waiters[0]
		blocked := now.Before(s.DelayUntil) || head.Limit > 0 && len(s.Holders) >= head.Limit
		for _, h := range s.Holders {
			if !dlm.Compatible(head.Mode, h.Mode) {
				blocked = true
			}
		}
		if !blocked {
			fz.fail("waiter %s at the head of the queue is compatible with every holder but was not granted", head.ID)
		}
	}
	grantedFromQueue := map[string]bool{}
	for _, l := range c.Granted {
		for _, w := range before.Waiters {
			if w.ID == l.ID {
				grantedFromQueue[l.ID] = true
			}
		}
	}
	for _, l := range c.Granted {
		if !grantedFromQueue[l.ID] {
			continue
		}
		for _, w := range before.Waiters {
			if w.ID == l.ID {
				break
			}
			// An earlier waiter still queued and live was overtaken.
			for _, still := range s.Waiters {
				if still.ID == w.ID {
					fz.fail("waiter %s granted while the earlier waiter %s (%v) still waits", l.ID, w.ID, w.Mode)
				}
			}
		}
	}
	// A new request (not from the queue) is granted only if nobody waited.
	for _, l := range c.Granted {
		if grantedFromQueue[l.ID] {
			continue
		}
		if len(s.Waiters) > 0 {
			fz.fail("request %s granted ahead of waiter %s", l.ID, s.Waiters[0].ID)
		}
	}
}

// ---------------------------------------------------------------------
// The reference model: one lock as plain lists, with obvious loops.

type refLease struct {
	ID, Tenant, Holder, Idem string
	Mode                     dlm.Mode
	Token                    int64
	TTL, Asked               time.Duration // Asked: the TTL the acquire asked for
	Acquired, Expires        time.Time
	Limit                    int
	Delay, MaxHold           time.Duration
}

type refWaiter struct {
	ID, Tenant, Holder, Idem, Ticket string
	Mode                             dlm.Mode
	Seq                              int64
	TTL                              time.Duration
	Queued, Deadline                 time.Time
	Limit                            int
	Delay, MaxHold                   time.Duration
}

type refEnded struct {
	lease  refLease
	reason dlm.EndReason
	at     time.Time
}

type refEvent struct {
	typ    dlm.EventType
	holder string
	mode   dlm.Mode
	token  int64
	at     time.Time
}

// refChange is what the model expects an operation to report.
type refChange struct {
	granted  []refLease
	renewed  []refLease
	ended    []refEnded
	queued   []refWaiter
	retaken  []refWaiter
	dequeued []string
	events   []refEvent
}

// equal compares field by field; go-cmp is kept for the diff on failure,
// since it is too slow for every step of a fuzz run.
func (c *refChange) equal(o *refChange) bool {
	return slices.Equal(c.granted, o.granted) && slices.Equal(c.renewed, o.renewed) &&
		slices.Equal(c.ended, o.ended) && slices.Equal(c.queued, o.queued) &&
		slices.Equal(c.retaken, o.retaken) && slices.Equal(c.dequeued, o.dequeued) &&
		slices.Equal(c.events, o.events)
}

type refLock struct {
	token      int64
	holders    []refLease  // in grant order
	waiters    []refWaiter // in arrival order
	delayUntil time.Time   // zero once passed
}

// conflictsWithHolders reports whether a request in mode with limit cannot
// be granted at now beside the holders.
func (m *refLock) conflictsWithHolders(now time.Time, mode dlm.Mode, limit int) bool {
	if now.Before(m.delayUntil) || limit > 0 && len(m.holders) >= limit {
		return true
	}
	for _, h := range m.holders {
		if mode == dlm.Exclusive || h.Mode == dlm.Exclusive {
			return true
		}
	}
	return false
}

func (m *refLock) grant(now time.Time, w refWaiter, c *refChange) refLease {
	m.token++
	l := refLease{ID: w.ID, Tenant: w.Tenant, Holder: w.Holder, Idem: w.Idem, Mode: w.Mode, Token: m.token, TTL: w.TTL, Asked: w.TTL,
		Acquired: now, Expires: capped(now, now, w.TTL, w.MaxHold), Limit: w.Limit, Delay: w.Delay, MaxHold: w.MaxHold}
	holder, mode := w.Holder, w.Mode
	m.holders = append(m.holders, l)
	c.granted = append(c.granted, l)
	c.events = append(c.events, refEvent{dlm.EventAcquired, holder, mode, l.Token, now})
	return l
}

// capped is the expiry of a lease acquired at acquired and renewed at now
// for ttl: never past acquired+maxHold.
func capped(acquired, now time.Time, ttl, maxHold time.Duration) time.Time {
	end := now.Add(ttl)
	if maxHold > 0 && acquired.Add(maxHold).Before(end) {
		return acquired.Add(maxHold)
	}
	return end
}

// delay starts the lock-delay of h, which ended other than by release at at.
func (m *refLock) delay(h refLease, at time.Time) {
	if h.Delay > 0 && at.Add(h.Delay).After(m.delayUntil) {
		m.delayUntil = at.Add(h.Delay)
	}
}

// dropDue removes the holders whose lease has run out at now (a lease is
// over at its expiry instant) and the waiters whose deadline has come, and
// ends a lock-delay that is over.
func (m *refLock) dropDue(now time.Time, c *refChange) {
	if !m.delayUntil.IsZero() && !now.Before(m.delayUntil) {
		m.delayUntil = time.Time{}
	}
	var keep []refLease
	for _, h := range m.holders {
		if now.Before(h.Expires) {
			keep = append(keep, h)
		} else {
			c.ended = append(c.ended, refEnded{h, dlm.Expired, h.Expires})
			c.events = append(c.events, refEvent{dlm.EventExpired, h.Holder, h.Mode, h.Token, h.Expires})
			m.delay(h, h.Expires)
		}
	}
	m.holders = keep
	var wkeep []refWaiter
	for _, w := range m.waiters {
		if now.Before(w.Deadline) {
			wkeep = append(wkeep, w)
		} else {
			c.dequeued = append(c.dequeued, w.ID)
		}
	}
	m.waiters = wkeep
}

// grantQueue grants from the front of the queue while the front fits.
func (m *refLock) grantQueue(now time.Time, c *refChange) {
	for len(m.waiters) > 0 && !m.conflictsWithHolders(now, m.waiters[0].Mode, m.waiters[0].Limit) {
		w := m.waiters[0]
		m.waiters = m.waiters[1:]
		c.dequeued = append(c.dequeued, w.ID)
		m.grant(now, w, c)
	}
}

// settle brings the lock to now and grants what it can at now.
func (m *refLock) settle(now time.Time, c *refChange) {
	m.catchUp(now, c)
	m.grantQueue(now, c)
}

// catchUp plays the lock forward to now: at every instant before now when
// a lease runs out or a deadline comes, earliest first, it drops what is
// due then and grants, with leases starting at now, the waiters whose turn
// came before their deadline; then it drops what is due at now itself.
func (m *refLock) catchUp(now time.Time, c *refChange) {
	for t := m.nextDue(); !t.IsZero() && t.Before(now); t = m.nextDue() {
		m.dropDue(t, c)
		m.grantQueue(now, c)
	}
	m.dropDue(now, c)
}

func (m *refLock) acquire(now time.Time, r dlm.Request, c *refChange) (dlm.Outcome, refLease, refWaiter, error) {
	m.settle(now, c)
	if r.IdempotencyKey != "" {
		for _, h := range m.holders {
			if h.Tenant == r.Tenant && h.Idem == r.IdempotencyKey {
				// The TTL asked for, not the one a renew left (guarantee 6).
				if h.Mode != r.Mode || h.Holder != r.HolderID || h.Asked != r.TTL {
					return 0, refLease{}, refWaiter{}, dlm.ErrIdempotencyKeyReused
				}
				return dlm.Replayed, h, refWaiter{}, nil
			}
		}
		for i, w := range m.waiters {
			if w.Tenant == r.Tenant && w.Idem == r.IdempotencyKey {
				if w.Mode != r.Mode || w.Holder != r.HolderID || w.TTL != r.TTL {
					return 0, refLease{}, refWaiter{}, dlm.ErrIdempotencyKeyReused
				}
				if r.Wait == 0 {
					return dlm.Conflict, refLease{}, refWaiter{}, nil
				}
				m.waiters[i].Ticket = r.ID
				m.waiters[i].Deadline = now.Add(r.Wait)
				c.retaken = append(c.retaken, m.waiters[i])
				return dlm.Queued, refLease{}, m.waiters[i], nil
			}
		}
	}
	// Every holder and waiter of a lock agrees on its limit.
	for _, h := range m.holders {
		if h.Limit != r.Limit {
			return 0, refLease{}, refWaiter{}, dlm.Invalid("limit", "mismatch")
		}
	}
	for _, w := range m.waiters {
		if w.Limit != r.Limit {
			return 0, refLease{}, refWaiter{}, dlm.Invalid("limit", "mismatch")
		}
	}
	seq := int64(1)
	if len(m.waiters) > 0 {
		seq = m.waiters[len(m.waiters)-1].Seq + 1
	}
	w := refWaiter{ID: r.ID, Tenant: r.Tenant, Holder: r.HolderID, Idem: r.IdempotencyKey, Ticket: r.ID,
		Mode: r.Mode, Seq: seq, TTL: r.TTL, Queued: now, Deadline: now.Add(r.Wait),
		Limit: r.Limit, Delay: r.LockDelay, MaxHold: r.MaxHold}
	if len(m.waiters) == 0 && !m.conflictsWithHolders(now, r.Mode, r.Limit) {
		return dlm.Granted, m.grant(now, w, c), refWaiter{}, nil
	}
	if r.Wait == 0 {
		return dlm.Conflict, refLease{}, refWaiter{}, nil
	}
	m.waiters = append(m.waiters, w)
	c.queued = append(c.queued, w)
	c.events = append(c.events, refEvent{dlm.EventWaiting, r.HolderID, r.Mode, 0, now})
	return dlm.Queued, refLease{}, w, nil
}

func (m *refLock) renew(now time.Time, id string, ttl time.Duration, c *refChange) (refLease, bool) {
	m.settle(now, c)
	for i := range m.holders {
		if m.holders[i].ID == id {
			if ttl > 0 {
				m.holders[i].TTL = ttl
			}
			h := m.holders[i]
			m.holders[i].Expires = capped(h.Acquired, now, h.TTL, h.MaxHold)
			h = m.holders[i]
			c.renewed = append(c.renewed, h)
			c.events = append(c.events, refEvent{dlm.EventRenewed, h.Holder, h.Mode, h.Token, now})
			return h, true
		}
	}
	return refLease{}, false
}

func (m *refLock) endHolder(i int, why dlm.EndReason, typ dlm.EventType, now time.Time, c *refChange) refLease {
	h := m.holders[i]
	m.holders = append(m.holders[:i:i], m.holders[i+1:]...)
	c.ended = append(c.ended, refEnded{h, why, now})
	c.events = append(c.events, refEvent{typ, h.Holder, h.Mode, h.Token, now})
	if why != dlm.Released {
		m.delay(h, now)
	}
	return h
}

func (m *refLock) release(now time.Time, id string, c *refChange) (refLease, bool) {
	m.catchUp(now, c)
	defer m.grantQueue(now, c)
	for i := range m.holders {
		if m.holders[i].ID == id {
			return m.endHolder(i, dlm.Released, dlm.EventReleased, now, c), true
		}
	}
	return refLease{}, false
}

func (m *refLock) forceRelease(now time.Time, c *refChange) []refLease {
	m.catchUp(now, c)
	var ended []refLease
	for len(m.holders) > 0 {
		ended = append(ended, m.endHolder(0, dlm.ForceReleased, dlm.EventForceReleased, now, c))
	}
	m.grantQueue(now, c)
	return ended
}

func (m *refLock) cancelWait(now time.Time, id, ticket string, c *refChange) (refLease, bool) {
	m.settle(now, c)
	for _, h := range m.holders {
		if h.ID == id {
			return h, true
		}
	}
	for i, w := range m.waiters {
		if w.ID == id && w.Ticket == ticket {
			m.waiters = append(m.waiters[:i:i], m.waiters[i+1:]...)
			c.dequeued = append(c.dequeued, id)
			m.grantQueue(now, c)
			break
		}
	}
	return refLease{}, false
}

func (m *refLock) ticketOf(id string) string {
	for _, w := range m.waiters {
		if w.ID == id {
			return w.Ticket
		}
	}
	return id
}

// view is the lock as a reader sees it at now, without changing anything.
func (m *refLock) view(now time.Time) *refLock {
	v := &refLock{token: m.token}
	if now.Before(m.delayUntil) {
		v.delayUntil = m.delayUntil
	}
	for _, h := range m.holders {
		if now.Before(h.Expires) {
			v.holders = append(v.holders, h)
		}
	}
	for _, w := range m.waiters {
		if now.Before(w.Deadline) {
			v.waiters = append(v.waiters, w)
		}
	}
	return v
}

// wouldGrant answers a dry run the only way that cannot be wrong: by trying
// the acquire on a copy.
func (m *refLock) wouldGrant(now time.Time, mode dlm.Mode, limit int) bool {
	cp := &refLock{token: m.token, holders: slices.Clone(m.holders), waiters: slices.Clone(m.waiters), delayUntil: m.delayUntil}
	out, _, _, _ := cp.acquire(now, dlm.Request{ID: "dry", Tenant: "dry", Mode: mode, HolderID: "dry", TTL: time.Second, Terms: dlm.Terms{Limit: limit}}, &refChange{})
	return out == dlm.Granted
}

func (m *refLock) nextDue() time.Time {
	t := m.delayUntil
	for _, h := range m.holders {
		if t.IsZero() || h.Expires.Before(t) {
			t = h.Expires
		}
	}
	for _, w := range m.waiters {
		if t.IsZero() || w.Deadline.Before(t) {
			t = w.Deadline
		}
	}
	return t
}

// ---------------------------------------------------------------------
// Conversions and state comparison.

func leaseOf(l dlm.Lease) refLease {
	return refLease{ID: l.ID, Tenant: l.Tenant, Holder: l.HolderID, Idem: l.IdempotencyKey, Mode: l.Mode,
		Token: l.Token, TTL: l.TTL, Asked: l.RequestedTTL, Acquired: l.AcquiredAt, Expires: l.ExpiresAt,
		Limit: l.Limit, Delay: l.LockDelay, MaxHold: l.MaxHold}
}

func leasesOf(ls []dlm.Lease) []refLease {
	var out []refLease
	for _, l := range ls {
		out = append(out, leaseOf(l))
	}
	return out
}

func waiterOf(w dlm.Waiter) refWaiter {
	return refWaiter{ID: w.ID, Tenant: w.Tenant, Holder: w.HolderID, Idem: w.IdempotencyKey, Ticket: w.Ticket,
		Mode: w.Mode, Seq: w.Seq, TTL: w.TTL, Queued: w.QueuedAt, Deadline: w.Deadline,
		Limit: w.Limit, Delay: w.LockDelay, MaxHold: w.MaxHold}
}

func waitersOf(ws []dlm.Waiter) []refWaiter {
	var out []refWaiter
	for _, w := range ws {
		out = append(out, waiterOf(w))
	}
	return out
}

func cloneState(s *dlm.LockState) *dlm.LockState {
	c := *s
	c.Holders = slices.Clone(s.Holders)
	c.Waiters = slices.Clone(s.Waiters)
	return &c
}

// applyChange does what a store does with a Change: insert the granted
// holders, then delete the ended ones (a lease can be both, see
// dlm.Change), delete the dequeued waiters and insert the queued ones,
// update the renewed and retaken ones, and store the highest token granted.
// It returns the state a store would load back (holders by token, waiters
// by Seq).
func applyChange(before *dlm.LockState, c *dlm.Change, delayUntil time.Time) *dlm.LockState {
	s := cloneState(before)
	if c.Delayed {
		s.DelayUntil = delayUntil
	}
	for _, l := range c.Granted {
		s.Holders = append(s.Holders, l)
		s.Token = max(s.Token, l.Token)
	}
	for _, e := range c.Ended {
		s.Holders = slices.DeleteFunc(s.Holders, func(h dlm.Lease) bool { return h.ID == e.ID })
	}
	for _, w := range c.Dequeued {
		s.Waiters = slices.DeleteFunc(s.Waiters, func(x dlm.Waiter) bool { return x.ID == w.ID })
	}
	for _, l := range c.Renewed {
		for i := range s.Holders {
			if s.Holders[i].ID == l.ID {
				s.Holders[i].TTL, s.Holders[i].ExpiresAt = l.TTL, l.ExpiresAt
			}
		}
	}
	s.Waiters = append(s.Waiters, c.Queued...)
	for _, w := range c.Retaken {
		for i := range s.Waiters {
			if s.Waiters[i].ID == w.ID {
				s.Waiters[i].Ticket, s.Waiters[i].Deadline = w.Ticket, w.Deadline
			}
		}
	}
	slices.SortStableFunc(s.Holders, func(a, b dlm.Lease) int { return cmp.Compare(a.Token, b.Token) })
	slices.SortStableFunc(s.Waiters, func(a, b dlm.Waiter) int { return cmp.Compare(a.Seq, b.Seq) })
	return s
}

func stateEqual(a, b *dlm.LockState) bool {
	return a.Key == b.Key && a.Token == b.Token && a.DelayUntil.Equal(b.DelayUntil) &&
		slices.Equal(leasesOf(a.Holders), leasesOf(b.Holders)) &&
		slices.Equal(waitersOf(a.Waiters), waitersOf(b.Waiters))
}

func describeState(s *dlm.LockState) string {
	var b strings.Builder
	fmt.Fprintf(&b, "token=%d holders=[", s.Token)
	for _, h := range s.Holders {
		fmt.Fprintf(&b, " %s:%v:t%d:exp%v", h.ID, h.Mode, h.Token, h.ExpiresAt.Sub(fzStart))
	}
	b.WriteString(" ] waiters=[")
	for _, w := range s.Waiters {
		fmt.Fprintf(&b, " %s:%v:seq%d:ticket=%s:dl%v", w.ID, w.Mode, w.Seq, w.Ticket, w.Deadline.Sub(fzStart))
	}
	b.WriteString(" ]")
	return b.String()
}

func outcomeName(o dlm.Outcome) string {
	switch o {
	case dlm.Granted:
		return "granted"
	case dlm.Replayed:
		return "replayed"
	case dlm.Conflict:
		return "conflict"
	case dlm.Queued:
		return "queued"
	}
	return fmt.Sprintf("outcome(%d)", o)
}

// TestDryRunGrantsWaitersDueFirst: WouldGrant (the dry run) must answer what
// an acquire at the same instant would do. When the holder has expired but
// nothing has swept it yet, an acquire first grants the queued shared waiter
// and is then granted alongside it; WouldGrant used to see the waiter still
// queued and answer false.
//
// Found by FuzzLockState (its reference model answers a dry run by trying
// the acquire on a copy); a regression test since.
func TestDryRunGrantsWaitersDueFirst(t *testing.T) {
	s := &dlm.LockState{Key: fzKey}
	var c dlm.Change
	x := dlm.Request{ID: "X", Tenant: "acme", Key: fzKey, Mode: dlm.Exclusive, HolderID: "x", TTL: time.Second}
	if out, _, _, err := s.Acquire(fzStart, x, &c); out != dlm.Granted || err != nil {
		t.Fatalf("X: %v, %v", out, err)
	}
	w := dlm.Request{ID: "S1", Tenant: "acme", Key: fzKey, Mode: dlm.Shared, HolderID: "s1", TTL: time.Second, Wait: time.Minute}
	if out, _, _, err := s.Acquire(fzStart, w, &c); out != dlm.Queued || err != nil {
		t.Fatalf("S1: %v, %v", out, err)
	}
	at := fzStart.Add(time.Second) // X's expiry; no sweeper has run
	dry := s.WouldGrant(at, dlm.Shared, 0)
	s2 := dlm.Request{ID: "S2", Tenant: "acme", Key: fzKey, Mode: dlm.Shared, HolderID: "s2", TTL: time.Second}
	out, _, _, err := s.Acquire(at, s2, &c)
	if err != nil {
		t.Fatal(err)
	}
	if dry != (out == dlm.Granted) {
		t.Errorf("WouldGrant(shared) = %v, but Acquire(shared) at the same instant = %v", dry, outcomeName(out))
	}
}

// TestLateSweepGrantsWaiterFromNow: if nothing touched the lock between the
// holder's expiry and the waiter's deadline (the sweeper was late: an
// overloaded or stopped process, a long GC pause), the waiter, whose turn
// came before its deadline, is still granted, and its lease starts when the
// grant is decided: it used to be backdated to the holder's expiry, so a
// waiter could be answered with a lease that had already run out.
func TestLateSweepGrantsWaiterFromNow(t *testing.T) {
	s := &dlm.LockState{Key: fzKey}
	var c dlm.Change
	x := dlm.Request{ID: "X", Tenant: "acme", Key: fzKey, Mode: dlm.Exclusive, HolderID: "x", TTL: time.Second}
	if out, _, _, err := s.Acquire(fzStart, x, &c); out != dlm.Granted || err != nil {
		t.Fatalf("X: %v, %v", out, err)
	}
	w := dlm.Request{ID: "W", Tenant: "acme", Key: fzKey, Mode: dlm.Exclusive, HolderID: "w", TTL: 500 * time.Millisecond, Wait: 2 * time.Second}
	if out, _, _, err := s.Acquire(fzStart, w, &c); out != dlm.Queued || err != nil {
		t.Fatalf("W: %v, %v", out, err)
	}
	// W's time-out at its deadline is the first thing to touch the lock
	// since X expired, a second earlier: longer ago than W's TTL.
	at := fzStart.Add(2 * time.Second)
	l, granted := s.CancelWait(at, "W", "W", &c)
	if !granted {
		t.Fatalf("W was dropped at its deadline, although X expired a second before it and W was next")
	}
	if !l.AcquiredAt.Equal(at) || !l.ExpiresAt.Equal(at.Add(w.TTL)) || l.Token != 2 {
		t.Errorf("W's lease: acquired %v, expires %v, token %d; want acquired at the decision %v, its TTL on from there, token 2", l.AcquiredAt, l.ExpiresAt, l.Token, at)
	}
}
