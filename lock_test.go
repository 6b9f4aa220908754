package dlm_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/dlmhq/dlm"
	"github.com/google/go-cmp/cmp"
)

// t0 is the fixed start of every core test.
var t0 = time.Date(2026, 11, 26, 10, 0, 0, 123456789, time.UTC)

var key = dlm.Key{Namespace: "acme", Name: "orders/42"}

func req(id string, m dlm.Mode, wait time.Duration) dlm.Request {
	return dlm.Request{ID: id, Tenant: "acme", Key: key, Mode: m, HolderID: "h-" + id, TTL: 10 * time.Second, Wait: wait}
}

func TestCompatibilityMatrix(t *testing.T) {
	tests := []struct {
		held, asked dlm.Mode
		want        dlm.Outcome
	}{
		{dlm.Exclusive, dlm.Exclusive, dlm.Conflict},
		{dlm.Exclusive, dlm.Shared, dlm.Conflict},
		{dlm.Shared, dlm.Exclusive, dlm.Conflict},
		{dlm.Shared, dlm.Shared, dlm.Granted},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%v held, %v asked", tt.held, tt.asked), func(t *testing.T) {
			s := &dlm.LockState{Key: key}
			var c dlm.Change
			if out, _, _, err := s.Acquire(t0, req("a", tt.held, 0), &c); out != dlm.Granted || err != nil {
				t.Fatalf("first acquire: %v, %v", out, err)
			}
			out, _, _, err := s.Acquire(t0, req("b", tt.asked, 0), &c)
			if err != nil || out != tt.want {
				t.Errorf("second acquire = %v, %v; want %v", out, err, tt.want)
			}
		})
	}
}

// holders returns the IDs of s's holders.
func holders(s *dlm.LockState) []string {
	ids := []string{}
	for _, h := range s.Holders {
		ids = append(ids, h.ID)
	}
	return ids
}

func TestFIFOWithMixedModes(t *testing.T) {
	// X0 holds; S1, X2, S3 queue behind it. Releasing X0 grants S1 only
	// (X2 is next and conflicts); releasing S1 grants X2; S3 never jumps
	// ahead of X2, although it is compatible with S1.
	s := &dlm.LockState{Key: key}
	var c dlm.Change
	steps := []struct {
		name string
		do   func() error
		want []string
	}{
		{"X0 acquires", func() error { _, _, _, err := s.Acquire(t0, req("X0", dlm.Exclusive, 0), &c); return err }, []string{"X0"}},
		{"S1 queues", func() error { return queue(s, req("S1", dlm.Shared, time.Minute), &c) }, []string{"X0"}},
		{"X2 queues", func() error { return queue(s, req("X2", dlm.Exclusive, time.Minute), &c) }, []string{"X0"}},
		{"S3 queues", func() error { return queue(s, req("S3", dlm.Shared, time.Minute), &c) }, []string{"X0"}},
		{"X0 releases", func() error { return release(s, "X0", &c) }, []string{"S1"}},
		{"S1 releases", func() error { return release(s, "S1", &c) }, []string{"X2"}},
		{"X2 releases", func() error { return release(s, "X2", &c) }, []string{"S3"}},
	}
	for _, st := range steps {
		if err := st.do(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if diff := cmp.Diff(holders(s), st.want); diff != "" {
			t.Fatalf("after %s, holders (-got +want):\n%s", st.name, diff)
		}
	}
}

func TestConsecutiveSharedWaitersGrantedTogether(t *testing.T) {
	s := &dlm.LockState{Key: key}
	var c dlm.Change
	mustAcquire(t, s, req("X0", dlm.Exclusive, 0), &c)
	for _, r := range []dlm.Request{req("S1", dlm.Shared, time.Minute), req("S2", dlm.Shared, time.Minute), req("X3", dlm.Exclusive, time.Minute), req("S4", dlm.Shared, time.Minute)} {
		if err := queue(s, r, &c); err != nil {
			t.Fatal(err)
		}
	}
	if err := release(s, "X0", &c); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(holders(s), []string{"S1", "S2"}); diff != "" {
		t.Errorf("holders (-got +want):\n%s", diff)
	}
	// A new shared request queues behind X3 instead of joining S1 and S2.
	out, _, _, err := s.Acquire(t0, req("S5", dlm.Shared, time.Minute), &c)
	if err != nil || out != dlm.Queued {
		t.Errorf("S5 = %v, %v; want queued behind X3", out, err)
	}
}

func TestExpiryExactlyAtExpiresAt(t *testing.T) {
	s := &dlm.LockState{Key: key}
	var c dlm.Change
	l := mustAcquire(t, s, req("A", dlm.Exclusive, 0), &c)
	just := l.ExpiresAt.Add(-time.Nanosecond)
	if out, _, _, _ := s.Acquire(just, req("B", dlm.Exclusive, 0), &c); out != dlm.Conflict {
		t.Errorf("1ns before expiry: %v, want conflict", out)
	}
	if !s.WouldGrant(l.ExpiresAt, dlm.Exclusive, 0) {
		t.Errorf("at expires_at the lease still counts as held in a dry run")
	}
	if v := s.View(l.ExpiresAt); len(v.Holders) != 0 {
		t.Errorf("at expires_at View shows holders %v", holders(&v))
	}
	c = dlm.Change{}
	out, got, _, err := s.Acquire(l.ExpiresAt, req("B", dlm.Exclusive, 0), &c)
	if err != nil || out != dlm.Granted {
		t.Fatalf("at expires_at: %v, %v; want granted", out, err)
	}
	if got.Token != l.Token+1 {
		t.Errorf("token after expiry = %d, want %d", got.Token, l.Token+1)
	}
	want := []dlm.EventType{dlm.EventExpired, dlm.EventAcquired}
	if diff := cmp.Diff(eventTypes(c.Events), want); diff != "" {
		t.Errorf("events (-got +want):\n%s", diff)
	}
	if len(c.Ended) != 1 || c.Ended[0].Reason != dlm.Expired || !c.Ended[0].EndedAt.Equal(l.ExpiresAt) {
		t.Errorf("ended = %+v, want A expired at its expires_at", c.Ended)
	}
}

func TestExpiryGrantsWaiter(t *testing.T) {
	s := &dlm.LockState{Key: key}
	var c dlm.Change
	l := mustAcquire(t, s, req("A", dlm.Exclusive, 0), &c)
	if err := queue(s, req("B", dlm.Exclusive, time.Hour), &c); err != nil {
		t.Fatal(err)
	}
	if due := s.NextDue(); !due.Equal(l.ExpiresAt) {
		t.Errorf("NextDue = %v, want %v", due, l.ExpiresAt)
	}
	c = dlm.Change{}
	s.Expire(l.ExpiresAt, &c)
	if diff := cmp.Diff(holders(s), []string{"B"}); diff != "" {
		t.Errorf("holders (-got +want):\n%s", diff)
	}
	if len(c.Dequeued) != 1 || c.Dequeued[0].ID != "B" || len(c.Granted) != 1 || c.Granted[0].ID != "B" {
		t.Errorf("change = %+v, want B dequeued and granted", c)
	}
}

func TestWaiterDeadlineDropsIt(t *testing.T) {
	s := &dlm.LockState{Key: key}
	var c dlm.Change
	mustAcquire(t, s, req("A", dlm.Exclusive, 0), &c)
	if err := queue(s, req("B", dlm.Exclusive, time.Second), &c); err != nil {
		t.Fatal(err)
	}
	c = dlm.Change{}
	s.Expire(t0.Add(time.Second), &c)
	if len(s.Waiters) != 0 || len(c.Dequeued) != 1 {
		t.Errorf("waiters = %d, dequeued %d; want B dropped at its deadline", len(s.Waiters), len(c.Dequeued))
	}
}

func TestLateExpiryGrantsFromNow(t *testing.T) {
	// X runs out at 1s, while W (10s wait) is next and V (shared) behind
	// it. An expiry that first runs at 5s records X's end at 1s and grants
	// W from 5s, the grant's decision, for W's whole TTL: not from 1s,
	// which would make it run out at 2s, before anybody was told. V waits
	// behind W as it would behind any holder.
	s := &dlm.LockState{Key: key}
	var c dlm.Change
	x, w, v := req("X", dlm.Exclusive, 0), req("W", dlm.Exclusive, 10*time.Second), req("V", dlm.Shared, 10*time.Second)
	x.TTL, w.TTL = time.Second, time.Second
	mustAcquire(t, s, x, &c)
	for _, r := range []dlm.Request{w, v} {
		if err := queue(s, r, &c); err != nil {
			t.Fatal(err)
		}
	}
	c = dlm.Change{}
	at1, now := t0.Add(time.Second), t0.Add(5*time.Second)
	s.Expire(now, &c)
	ev := func(typ dlm.EventType, r dlm.Request, token int64, at time.Time) dlm.Event {
		return dlm.Event{Type: typ, Key: key, HolderID: r.HolderID, Mode: r.Mode, Token: token, At: at}
	}
	want := []dlm.Event{
		ev(dlm.EventExpired, x, 1, at1),
		ev(dlm.EventAcquired, w, 2, now),
	}
	if diff := cmp.Diff(c.Events, want); diff != "" {
		t.Errorf("events (-got +want):\n%s", diff)
	}
	if len(s.Holders) != 1 || s.Holders[0].ID != "W" || !s.Holders[0].AcquiredAt.Equal(now) || !s.Holders[0].ExpiresAt.Equal(now.Add(w.TTL)) {
		t.Errorf("holders = %+v, want W from %v to %v", s.Holders, now, now.Add(w.TTL))
	}
	if len(s.Waiters) != 1 || s.Waiters[0].ID != "V" {
		t.Errorf("waiters = %+v, want V still queued", s.Waiters)
	}
}

func TestTokensStrictlyIncrease(t *testing.T) {
	s := &dlm.LockState{Key: key, Token: 41} // as loaded from a store
	var c dlm.Change
	last := s.Token
	now := t0
	for i := range 50 {
		id := fmt.Sprint(i)
		m := dlm.Shared
		if i%3 == 0 {
			m = dlm.Exclusive
		}
		out, l, _, err := s.Acquire(now, req(id, m, 0), &c)
		if err != nil {
			t.Fatal(err)
		}
		if out == dlm.Granted {
			if l.Token <= last {
				t.Fatalf("grant %d got token %d after %d", i, l.Token, last)
			}
			last = l.Token
		}
		switch i % 4 {
		case 0:
			s.ForceRelease(now, &c)
		case 1:
			if len(s.Holders) > 0 {
				s.Release(now, s.Holders[0].ID, &c)
			}
		case 2:
			now = now.Add(time.Minute) // everything expires
		}
	}
	if s.Token != last {
		t.Errorf("state token %d, last granted %d", s.Token, last)
	}
}

func TestTokenFloor(t *testing.T) {
	// A lock whose last tokens were lost (restored from an old backup)
	// starts, in the process that loads it, from that process's floor,
	// not from what the store remembers; one whose token is above the
	// floor keeps counting by one.
	var c dlm.Change
	floor := dlm.TokenFloor(t0)
	lost := &dlm.LockState{Key: key, Token: 7, Floor: floor}
	if l := mustAcquire(t, lost, req("A", dlm.Exclusive, 0), &c); l.Token != floor {
		t.Errorf("token %d after a loss, want the floor %d", l.Token, floor)
	}
	ahead := &dlm.LockState{Key: key, Token: floor + 41, Floor: floor}
	if l := mustAcquire(t, ahead, req("A", dlm.Exclusive, 0), &c); l.Token != floor+42 {
		t.Errorf("token %d, want one above the last, %d", l.Token, floor+42)
	}
	if f := dlm.TokenFloor(time.Date(2242, 1, 1, 0, 0, 0, 0, time.UTC)); f >= 1<<53 {
		t.Errorf("the floor in 2242 is %d, beyond what JavaScript reads exactly", f)
	}
}

// otherRequests turn a request into another one that must not reuse its
// idempotency key (guarantee 6).
var otherRequests = map[string]func(*dlm.Request){
	"mode":   func(r *dlm.Request) { r.Mode = dlm.Shared },
	"holder": func(r *dlm.Request) { r.HolderID = "other" },
	"ttl":    func(r *dlm.Request) { r.TTL = 2 * r.TTL },
}

func TestIdempotentReplayAndMismatch(t *testing.T) {
	s := &dlm.LockState{Key: key}
	var c dlm.Change
	r := req("A", dlm.Exclusive, 0)
	r.IdempotencyKey = "k1"
	first := mustAcquire(t, s, r, &c)

	retry := r
	retry.ID = "A-retry"
	out, got, _, err := s.Acquire(t0.Add(time.Second), retry, &c)
	if err != nil || out != dlm.Replayed {
		t.Fatalf("retry = %v, %v; want replayed", out, err)
	}
	if diff := cmp.Diff(got, first); diff != "" {
		t.Errorf("replayed lease (-got +want):\n%s", diff)
	}

	for name, change := range otherRequests {
		bad := retry
		change(&bad)
		if _, _, _, err := s.Acquire(t0, bad, &c); !errors.Is(err, dlm.ErrIdempotencyKeyReused) {
			t.Errorf("same key, different %s: err = %v, want idempotency_key_reused", name, err)
		}
	}

	// A renew may change the lease's TTL: the retry is still compared with
	// what was first asked, so the original request replays and one with
	// the renewed TTL does not.
	renewed, _ := s.Renew(t0, first.ID, time.Hour, &c)
	if out, _, _, err := s.Acquire(t0, retry, &c); out != dlm.Replayed || err != nil {
		t.Errorf("retry after a renew with another ttl = %v, %v; want replayed", out, err)
	}
	asRenewed := retry
	asRenewed.TTL = time.Hour
	if _, _, _, err := s.Acquire(t0, asRenewed, &c); !errors.Is(err, dlm.ErrIdempotencyKeyReused) {
		t.Errorf("retry with the renewed ttl: err = %v, want idempotency_key_reused", err)
	}

	// Another tenant's key of the same name is another key.
	other := retry
	other.Tenant = "globex"
	if out, _, _, _ := s.Acquire(t0, other, &c); out != dlm.Conflict {
		t.Errorf("other tenant's key = %v, want conflict", out)
	}

	// Once the lease has expired, the key takes a new lease.
	out, got, _, err = s.Acquire(renewed.ExpiresAt, retry, &c)
	if err != nil || out != dlm.Granted || got.ID != "A-retry" {
		t.Errorf("after expiry = %v %q, %v; want a new grant", out, got.ID, err)
	}
}

func TestIdempotentRetryTakesOverQueueEntry(t *testing.T) {
	s := &dlm.LockState{Key: key}
	var c dlm.Change
	mustAcquire(t, s, req("X", dlm.Exclusive, 0), &c)
	r := req("W", dlm.Exclusive, time.Minute)
	r.IdempotencyKey = "k"
	if err := queue(s, r, &c); err != nil {
		t.Fatal(err)
	}
	if err := queue(s, req("V", dlm.Exclusive, time.Minute), &c); err != nil {
		t.Fatal(err)
	}
	retry := r
	retry.ID = "W2"
	c = dlm.Change{}
	out, _, w, err := s.Acquire(t0.Add(time.Second), retry, &c)
	if err != nil || out != dlm.Queued || w.ID != "W" || w.Ticket != "W2" {
		t.Fatalf("retry = %v %+v, %v; want to take over W", out, w, err)
	}
	if len(s.Waiters) != 2 || s.Waiters[0].ID != "W" || len(c.Retaken) != 1 || len(c.Queued) != 0 {
		t.Fatalf("queue = %+v, change %+v; want W first with no new entry", s.Waiters, c)
	}
	// wait_ms may differ (guarantee 6): a retry that tries once is not
	// granted, and the entry stays with the request waiting on it.
	once := retry
	once.ID, once.Wait = "W3", 0
	c = dlm.Change{}
	if out, _, _, err := s.Acquire(t0.Add(time.Second), once, &c); err != nil || out != dlm.Conflict || s.Waiters[0].Ticket != "W2" {
		t.Fatalf("retry without wait = %v, %v, ticket %q; want a conflict leaving the entry to W2", out, err, s.Waiters[0].Ticket)
	}
	for name, change := range otherRequests {
		bad := retry
		change(&bad)
		if _, _, _, err := s.Acquire(t0.Add(time.Second), bad, &c); !errors.Is(err, dlm.ErrIdempotencyKeyReused) {
			t.Errorf("queued, same key, different %s: err = %v, want idempotency_key_reused", name, err)
		}
	}
	// The abandoned request's cancellation no longer removes the entry.
	if _, granted := s.CancelWait(t0, "W", "W", &c); granted || len(s.Waiters) != 2 {
		t.Errorf("stale ticket removed the entry")
	}
	if _, granted := s.CancelWait(t0, "W", "W2", &c); granted || len(s.Waiters) != 1 {
		t.Errorf("current ticket did not remove the entry")
	}
}

func TestCancelWaitUnblocksSharedBehindIt(t *testing.T) {
	s := &dlm.LockState{Key: key}
	var c dlm.Change
	mustAcquire(t, s, req("S0", dlm.Shared, 0), &c)
	if err := queue(s, req("X1", dlm.Exclusive, time.Minute), &c); err != nil {
		t.Fatal(err)
	}
	if err := queue(s, req("S2", dlm.Shared, time.Minute), &c); err != nil {
		t.Fatal(err)
	}
	s.CancelWait(t0, "X1", "X1", &c)
	if diff := cmp.Diff(holders(s), []string{"S0", "S2"}); diff != "" {
		t.Errorf("holders (-got +want):\n%s", diff)
	}
}

func TestCancelWaitAfterGrantReturnsLease(t *testing.T) {
	s := &dlm.LockState{Key: key}
	var c dlm.Change
	mustAcquire(t, s, req("A", dlm.Exclusive, 0), &c)
	if err := queue(s, req("B", dlm.Exclusive, time.Minute), &c); err != nil {
		t.Fatal(err)
	}
	if err := release(s, "A", &c); err != nil {
		t.Fatal(err)
	}
	l, granted := s.CancelWait(t0, "B", "B", &c)
	if !granted || l.ID != "B" {
		t.Errorf("CancelWait after grant = %+v, %v; want B's lease", l, granted)
	}
}

func TestRenew(t *testing.T) {
	s := &dlm.LockState{Key: key}
	var c dlm.Change
	l := mustAcquire(t, s, req("A", dlm.Exclusive, 0), &c)
	at := t0.Add(5 * time.Second)
	got, ok := s.Renew(at, "A", 0, &c)
	if !ok || !got.ExpiresAt.Equal(at.Add(l.TTL)) || got.Token != l.Token {
		t.Errorf("renew = %+v, %v; want expiry %v, same token", got, ok, at.Add(l.TTL))
	}
	got, _ = s.Renew(at, "A", time.Minute, &c)
	if got.TTL != time.Minute || !got.ExpiresAt.Equal(at.Add(time.Minute)) {
		t.Errorf("renew with ttl = %+v; want TTL 1m from %v", got, at)
	}
	if _, ok := s.Renew(got.ExpiresAt, "A", 0, &c); ok {
		t.Errorf("renewed a lease at its expiry: expired leases are never revived")
	}
}

func TestForceReleaseEndsAllAndGrants(t *testing.T) {
	s := &dlm.LockState{Key: key}
	var c dlm.Change
	mustAcquire(t, s, req("S1", dlm.Shared, 0), &c)
	mustAcquire(t, s, req("S2", dlm.Shared, 0), &c)
	if err := queue(s, req("X", dlm.Exclusive, time.Minute), &c); err != nil {
		t.Fatal(err)
	}
	c = dlm.Change{}
	ended := s.ForceRelease(t0, &c)
	if len(ended) != 2 || ended[0].Reason != dlm.ForceReleased {
		t.Errorf("ended = %+v", ended)
	}
	if diff := cmp.Diff(holders(s), []string{"X"}); diff != "" {
		t.Errorf("holders (-got +want):\n%s", diff)
	}
	want := []dlm.EventType{dlm.EventForceReleased, dlm.EventForceReleased, dlm.EventAcquired}
	if diff := cmp.Diff(eventTypes(c.Events), want); diff != "" {
		t.Errorf("events (-got +want):\n%s", diff)
	}
}

func mustAcquire(t *testing.T, s *dlm.LockState, r dlm.Request, c *dlm.Change) dlm.Lease {
	t.Helper()
	out, l, _, err := s.Acquire(t0, r, c)
	if err != nil || out != dlm.Granted {
		t.Fatalf("acquire %s: %v, %v", r.ID, out, err)
	}
	return l
}

func queue(s *dlm.LockState, r dlm.Request, c *dlm.Change) error {
	out, _, _, err := s.Acquire(t0, r, c)
	if err == nil && out != dlm.Queued {
		err = fmt.Errorf("acquire %s: %v, want queued", r.ID, out)
	}
	return err
}

func release(s *dlm.LockState, id string, c *dlm.Change) error {
	if _, ok := s.Release(t0, id, c); !ok {
		return fmt.Errorf("release %s: not held", id)
	}
	return nil
}

func eventTypes(es []dlm.Event) []dlm.EventType {
	ts := []dlm.EventType{}
	for _, e := range es {
		ts = append(ts, e.Type)
	}
	return ts
}
