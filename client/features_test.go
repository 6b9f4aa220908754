package client

import (
	"errors"
	"testing"
	"time"

	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/dlmtest"
)

// The lock features (semaphores, multi-lock acquires, max hold and
// lock-delay) against the real server, over the session and over HTTP.

var transports = []struct {
	name string
	opts *Options
}{{"session", nil}, {"http", &Options{HTTPOnly: true}}}

func TestSemaphoreGrantsUpToItsLimit(t *testing.T) {
	s := startServer(t)
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			c := newClient(t, s.URL, s.TenantKey, tr.opts)
			ctx := ctxFor(t, time.Minute)
			sem := c.Semaphore("pool/"+tr.name, 2)
			a, err := sem.TryAcquire(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := sem.TryAcquire(ctx, nil); err != nil {
				t.Fatal(err)
			}
			if _, err := sem.TryAcquire(ctx, nil); !errors.Is(err, dlm.ErrLockConflict) {
				t.Fatalf("third permit of 2: %v, want lock_conflict", err)
			}
			var de *dlm.Error
			if _, err := c.Semaphore("pool/"+tr.name, 3).TryAcquire(ctx, nil); !errors.As(err, &de) || de.Code != dlm.CodeInvalidArgument || de.Field != "limit" {
				t.Fatalf("another limit: %v, want invalid_argument on limit", err)
			}
			if got := a.Lease(); got.Mode != dlm.Shared || got.Limit != 2 {
				t.Fatalf("permit is %v limit %d, want shared limit 2", got.Mode, got.Limit)
			}
			info, err := c.Inspect(ctx, "pool/"+tr.name, "")
			if err != nil || info.Limit != 2 || len(info.Holders) != 2 {
				t.Fatalf("inspect: %+v, %v; want limit 2 and 2 holders", info, err)
			}
			if err := a.Release(ctx); err != nil {
				t.Fatal(err)
			}
			if _, err := sem.Acquire(ctx, &AcquireOptions{Wait: 10 * time.Second}); err != nil {
				t.Fatalf("a permit after a release: %v", err)
			}
		})
	}
}

func TestAcquireManyIsAllOrNothing(t *testing.T) {
	s := startServer(t)
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			c := newClient(t, s.URL, s.TenantKey, tr.opts)
			ctx := ctxFor(t, time.Minute)
			a, b := "many/a-"+tr.name, "many/b-"+tr.name
			specs := []LockSpec{{Name: a}, {Name: b, Mode: dlm.Shared, Limit: 3}}
			other, err := c.TryAcquire(ctx, a, nil)
			if err != nil {
				t.Fatal(err)
			}
			var de *dlm.Error
			if _, err := c.TryAcquireMany(ctx, specs, nil); !errors.As(err, &de) || de.Code != dlm.CodeLockConflict || de.Lock != a {
				t.Fatalf("with %s held: %v, want lock_conflict naming it", a, err)
			}
			if info, err := c.Inspect(ctx, b, ""); err != nil || len(info.Holders) != 0 {
				t.Fatalf("%s after the refusal: %+v, %v; want free", b, info, err)
			}
			if err := other.Release(ctx); err != nil {
				t.Fatal(err)
			}
			ls, err := c.AcquireMany(ctx, specs, &AcquireOptions{Wait: 10 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			if len(ls) != 2 || ls[0].Name() != a || ls[1].Name() != b || ls[1].Mode() != dlm.Shared || ls[1].Lease().Limit != 3 {
				t.Fatalf("got %d locks, want %s and %s (shared, limit 3) in order", len(ls), a, b)
			}
			// Each lease is its own: releasing one leaves the other held.
			if err := ls[0].Release(ctx); err != nil {
				t.Fatal(err)
			}
			if info, err := c.Inspect(ctx, b, ""); err != nil || len(info.Holders) != 1 || info.Holders[0].Token != ls[1].Token() {
				t.Fatalf("%s after releasing %s: %+v, %v; want still held", b, a, info, err)
			}
			if err := ls[1].Release(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestAcquireManyWaitsForEveryLock(t *testing.T) {
	s := startServer(t)
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			c := newClient(t, s.URL, s.TenantKey, tr.opts)
			ctx := ctxFor(t, time.Minute)
			a, b := "wait/a-"+tr.name, "wait/b-"+tr.name
			held, err := c.TryAcquire(ctx, b, nil)
			if err != nil {
				t.Fatal(err)
			}
			type result struct {
				ls  []*Lock
				err error
			}
			done := make(chan result, 1)
			go func() {
				ls, err := c.AcquireMany(ctx, []LockSpec{{Name: a}, {Name: b}}, nil)
				done <- result{ls, err}
			}()
			dlmtest.Eventually(t, "the acquire queues on "+b, func() bool {
				select {
				case r := <-done:
					t.Fatalf("answered before %s was free: %v", b, r.err)
				default:
				}
				info, err := c.Inspect(ctx, b, "")
				return err == nil && len(info.Waiters) == 1 && info.Waiters[0].Locks == 2
			})
			if err := held.Release(ctx); err != nil {
				t.Fatal(err)
			}
			r := <-done
			if r.err != nil {
				t.Fatal(r.err)
			}
			for _, l := range r.ls {
				if err := l.Release(ctx); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// TestMaxHoldEndsTheLockDespiteKeepAlive: the keep-alive's renewals are
// answered with expires_at capped at the max hold, and the Lock never
// counts on the lease past it.
func TestMaxHoldEndsTheLockDespiteKeepAlive(t *testing.T) {
	s := startServer(t)
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			c := newClient(t, s.URL, s.TenantKey, tr.opts)
			ctx := ctxFor(t, time.Minute)
			const maxHold = 900 * time.Millisecond
			l, err := c.TryAcquire(ctx, "maxhold/"+tr.name, &AcquireOptions{TTL: 300 * time.Millisecond, MaxHold: maxHold})
			if err != nil {
				t.Fatal(err)
			}
			granted := time.Now() // the acquire was sent before
			if got := l.Lease().MaxHold; got != maxHold {
				t.Fatalf("lease max hold %v, want %v", got, maxHold)
			}
			waitFor(t, l.Lost(), 10*time.Second, "lost at its max hold")
			if !errors.Is(l.Err(), ErrLockLost) {
				t.Fatalf("Err() = %v, want ErrLockLost", l.Err())
			}
			if got := l.ExpiresAt(); got.After(granted.Add(maxHold)) {
				t.Fatalf("the Lock counted on the lease until %v after its grant, past its max hold", got.Sub(granted))
			}
			if lease := l.Lease(); lease.ExpiresAt.After(lease.AcquiredAt.Add(maxHold)) {
				t.Fatalf("server's expires_at %v passes acquired_at %v + max hold", lease.ExpiresAt, lease.AcquiredAt)
			}
		})
	}
}

func TestLockDelayAfterExpiry(t *testing.T) {
	s := startServer(t)
	c := newClient(t, s.URL, s.TenantKey, nil)
	ctx := ctxFor(t, time.Minute)
	l, err := c.TryAcquire(ctx, "delayed", &AcquireOptions{TTL: 200 * time.Millisecond, LockDelay: time.Minute, NoKeepAlive: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := l.Lease().LockDelay; got != time.Minute {
		t.Fatalf("lease lock delay %v, want 1m", got)
	}
	waitFor(t, l.Lost(), 10*time.Second, "lost at its expiry")
	dlmtest.Eventually(t, "the lock-delay shows", func() bool {
		info, err := c.Inspect(ctx, "delayed", "")
		return err == nil && !info.DelayUntil.IsZero()
	})
	if _, err := c.TryAcquire(ctx, "delayed", nil); !errors.Is(err, dlm.ErrLockConflict) {
		t.Fatalf("acquire during the lock-delay: %v, want lock_conflict", err)
	}
}
