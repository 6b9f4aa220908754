package client

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"
)

func TestWithLockCancelsFnOnLossAndReleases(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeServer()
		c := fakeClient(t, handlerTransport{f})
		err := c.WithLock(context.Background(), "jobs/a", &AcquireOptions{TTL: fakeTTL}, func(ctx context.Context, l *Lock) error {
			time.Sleep(fakeTTL / 2)
			f.forceRelease()
			<-ctx.Done() // the work notices the loss through its context
			if cause := context.Cause(ctx); !errors.Is(cause, ErrLockLost) {
				t.Errorf("fn's context cause = %v, want ErrLockLost", cause)
			}
			return ctx.Err()
		})
		if !errors.Is(err, ErrLockLost) || !errors.Is(err, context.Canceled) {
			t.Errorf("WithLock = %v, want fn's error joined with ErrLockLost", err)
		}
	})
}

func TestWithLockReleasesWhenFnFailsAndCtxEnded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeServer()
		c := fakeClient(t, handlerTransport{f})
		ctx, cancel := context.WithCancel(context.Background())
		boom := errors.New("boom")
		var id string
		err := c.WithLock(ctx, "jobs/a", &AcquireOptions{TTL: fakeTTL}, func(ctx context.Context, l *Lock) error {
			id = l.LeaseID()
			cancel() // the caller gives up; the release must still happen
			return boom
		})
		if !errors.Is(err, boom) || errors.Is(err, ErrLockLost) {
			t.Errorf("WithLock = %v, want only fn's error", err)
		}
		if f.ended[id] != "released" {
			t.Errorf("lease %s not released: %q", id, f.ended[id])
		}
	})
}
