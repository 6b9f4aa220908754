package dlm_test

import (
	"testing"
	"time"

	"github.com/dlmhq/dlm"
)

func termsRequest(id string, m dlm.Mode, t dlm.Terms, wait time.Duration) dlm.Request {
	return dlm.Request{ID: id, Tenant: "acme", Key: fzKey, Mode: m, HolderID: id, TTL: time.Second, Wait: wait, Terms: t}
}

func TestSemaphoreGrantsUpToItsLimit(t *testing.T) {
	s := &dlm.LockState{Key: fzKey}
	sem := dlm.Terms{Limit: 2}
	for _, id := range []string{"p1", "p2"} {
		if out, _, _, err := s.Acquire(fzStart, termsRequest(id, dlm.Shared, sem, 0), new(dlm.Change)); out != dlm.Granted || err != nil {
			t.Fatalf("%s: %v %v", id, outcomeName(out), err)
		}
	}
	if out, _, _, _ := s.Acquire(fzStart, termsRequest("p3", dlm.Shared, sem, time.Minute), new(dlm.Change)); out != dlm.Queued {
		t.Fatalf("third permit: %v, want queued", outcomeName(out))
	}
	_, _, _, err := s.Acquire(fzStart, termsRequest("other", dlm.Shared, dlm.Terms{Limit: 3}, 0), new(dlm.Change))
	if dlm.ErrorCode(err) != dlm.CodeInvalidArgument {
		t.Fatalf("another limit: %v, want invalid_argument", err)
	}
	_, _, _, err = s.Acquire(fzStart, termsRequest("plain", dlm.Shared, dlm.Terms{}, 0), new(dlm.Change))
	if dlm.ErrorCode(err) != dlm.CodeInvalidArgument {
		t.Fatalf("no limit on a semaphore: %v, want invalid_argument", err)
	}
	c := new(dlm.Change)
	s.Release(fzStart, "p1", c)
	if len(c.Granted) != 1 || c.Granted[0].ID != "p3" {
		t.Fatalf("release of a permit granted %+v, want p3", c.Granted)
	}
}

func TestLockDelayAfterExpiryAndForceReleaseNotRelease(t *testing.T) {
	delay := dlm.Terms{LockDelay: 500 * time.Millisecond}
	for _, end := range []string{"expiry", "force-release", "release"} {
		s := &dlm.LockState{Key: fzKey}
		s.Acquire(fzStart, termsRequest("x", dlm.Exclusive, delay, 0), new(dlm.Change))
		s.Acquire(fzStart, termsRequest("w", dlm.Exclusive, dlm.Terms{}, time.Minute), new(dlm.Change))
		endAt := fzStart.Add(200 * time.Millisecond)
		c := new(dlm.Change)
		switch end {
		case "expiry":
			endAt = fzStart.Add(time.Second)
			s.Expire(endAt, c)
		case "force-release":
			s.ForceRelease(endAt, c)
		case "release":
			s.Release(endAt, "x", c)
		}
		if end == "release" {
			if len(c.Granted) != 1 || !c.Granted[0].AcquiredAt.Equal(endAt) {
				t.Fatalf("release: granted %+v; want w at once", c.Granted)
			}
			continue
		}
		if len(c.Granted) != 0 || !c.Delayed || !s.DelayUntil.Equal(endAt.Add(delay.LockDelay)) {
			t.Fatalf("%s: granted %d, delay until %v; want nobody until %v", end, len(c.Granted), s.DelayUntil, endAt.Add(delay.LockDelay))
		}
		if s.WouldGrant(s.DelayUntil.Add(-time.Nanosecond), dlm.Exclusive, 0) {
			t.Fatalf("%s: a dry run just before the delay ends would be granted", end)
		}
		if got := s.NextDue(); !got.Equal(s.DelayUntil) {
			t.Fatalf("%s: NextDue %v, want the end of the delay %v", end, got, s.DelayUntil)
		}
		at := s.DelayUntil
		c = new(dlm.Change)
		s.Expire(at, c)
		if len(c.Granted) != 1 || !c.Granted[0].AcquiredAt.Equal(at) || !s.DelayUntil.IsZero() || !c.Delayed {
			t.Fatalf("%s: at the end of the delay granted %+v, delay until %v", end, c.Granted, s.DelayUntil)
		}
	}
}

func TestMaxHoldCapsRenewals(t *testing.T) {
	s := &dlm.LockState{Key: fzKey}
	_, l, _, _ := s.Acquire(fzStart, termsRequest("x", dlm.Exclusive, dlm.Terms{MaxHold: 1500 * time.Millisecond}, 0), new(dlm.Change))
	if !l.ExpiresAt.Equal(fzStart.Add(time.Second)) {
		t.Fatalf("granted until %v", l.ExpiresAt)
	}
	r, ok := s.Renew(fzStart.Add(900*time.Millisecond), "x", 0, new(dlm.Change))
	if !ok || !r.ExpiresAt.Equal(fzStart.Add(1500*time.Millisecond)) {
		t.Fatalf("renew: %v until %v; want until acquired_at + max hold", ok, r.ExpiresAt)
	}
	if _, ok := s.Renew(fzStart.Add(1500*time.Millisecond), "x", 0, new(dlm.Change)); ok {
		t.Fatal("renewed at the max hold")
	}
}
