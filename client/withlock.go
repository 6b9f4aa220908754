package client

import (
	"context"
	"errors"
	"time"

	"github.com/dlmhq/dlm"
)

// releaseTimeout bounds the release at the end of WithLock, which runs on a
// fresh context so that it happens even when ctx has ended.
const releaseTimeout = 10 * time.Second

// WithLock acquires name (as Acquire does), runs fn with a context that is
// cancelled when ctx ends or the lease is lost, and releases the lease when
// fn returns, always, on a fresh context bounded by 10s.
//
// It returns the acquire's error if the lock was not had, and otherwise fn's
// error, joined with Lock.Err() (matching ErrLockLost) if the lease was lost
// while fn ran and with the release's error if the release failed. fn must
// stop using what the lock protects once its context is done, and should
// pass l.Token() to every write.
func (c *Client) WithLock(ctx context.Context, name string, opts *AcquireOptions, fn func(ctx context.Context, l *Lock) error) error {
	l, err := c.Acquire(ctx, name, opts)
	if err != nil {
		return err
	}
	fctx, cancel := context.WithCancelCause(ctx)
	stop := context.AfterFunc(l.Context(), func() { cancel(context.Cause(l.Context())) })
	err = fn(fctx, l)
	stop()
	cancel(nil)
	lostErr := l.Err()
	rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
	defer rcancel()
	relErr := l.Release(rctx)
	if lostErr != nil && errors.Is(relErr, dlm.ErrLeaseEnded) {
		relErr = nil // the loss already says the lease ended
	}
	return errors.Join(err, lostErr, relErr)
}
