package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/dlmhq/dlm"
)

// Lock is a held lease with automatic keep-alive.
//
// A lock can vanish at any time: an operator can force-release it, a network
// partition or a paused process can keep renewals from arriving, the server
// can lose it. Lost and Context tell the holder as soon as the client knows,
// but by then another holder may already have the lock. Only the fencing
// token (Token) protects downstream writes: pass it along with every write
// and have the downstream system reject tokens lower than the highest it has
// seen.
//
// The keep-alive renews the lease when a third of its TTL has passed and
// retries transient failures (network errors, 502/503/504) with backoff. The
// Lock declares the lease lost:
//   - at once when the server says the lease is over (410 lease_ended, 404)
//     or refuses the renewal outright (any other 4xx);
//   - when ExpiresAt, less a safety margin (a tenth of the TTL, at most 1s),
//     passes without a confirmed renewal. ExpiresAt is measured on this
//     machine from when the last confirmed request was sent, so it is never
//     later than the server's own expiry: the Lock never reports a lease
//     held when it might not be.
//
// A Lock is safe for concurrent use.
type Lock struct {
	c        *Client
	lease    dlm.Lease // the fixed fields: ID, Key, Mode, HolderID, Token
	replayed bool

	ctx    context.Context
	cancel context.CancelCauseFunc
	lost   chan struct{}

	kctx    context.Context // the keep-alive's; ended by Release and loss
	kstop   context.CancelFunc
	done    chan struct{} // closed when the keep-alive goroutine has exited
	renewed chan struct{} // signalled (without blocking) by every confirmed renewal

	mu       sync.Mutex
	ttl      time.Duration
	server   time.Time   // the server's expires_at, last confirmed
	deadline time.Time   // local: send time of the last confirmed request + its TTL, at most holdEnd
	holdEnd  time.Time   // local: send time of the acquire + the lease's MaxHold; zero if none
	timer    *time.Timer // runs expire at deadline - margin
	renewErr error       // the keep-alive's last failure since its last success
	err      error       // why the lease was lost
	released bool

	releaseOnce sync.Once
	releaseErr  error

	// onSession: acquired over the client's session, which pushes the
	// lease's end and runs its keep-alive.
	onSession      bool
	releaseOnClose bool
}

// margin is how long before its known expiry a lease is declared lost: a
// tenth of the TTL, at most 1s, to absorb timer and scheduling delays.
func margin(ttl time.Duration) time.Duration { return min(ttl/10, time.Second) }

// newLock wraps a lease whose grant was requested at sent.
func newLock(c *Client, lease dlm.Lease, sent time.Time, replayed, keepAlive bool) *Lock {
	l := &Lock{
		c: c, lease: lease, replayed: replayed, lost: make(chan struct{}), done: make(chan struct{}), renewed: make(chan struct{}, 1),
		ttl: lease.TTL, server: lease.ExpiresAt, deadline: sent.Add(lease.TTL),
	}
	if lease.MaxHold > 0 {
		// The grant came after sent, so the server's cap is no earlier.
		l.holdEnd = sent.Add(lease.MaxHold)
		l.deadline = l.capLocked(l.deadline)
	}
	l.ctx, l.cancel = context.WithCancelCause(context.Background())
	l.kctx, l.kstop = context.WithCancel(context.Background())
	l.mu.Lock() // the timer may fire before it is stored
	l.timer = time.AfterFunc(time.Until(l.deadline.Add(-margin(l.ttl))), l.expire)
	l.mu.Unlock()
	if keepAlive {
		go l.keepAlive()
	} else {
		close(l.done)
	}
	return l
}

// newSessionLock wraps a lease acquired over the client's session. Its
// keep-alive, if any, is the session's (session.keep).
func newSessionLock(c *Client, lease dlm.Lease, sent time.Time, replayed, releaseOnClose bool) *Lock {
	l := newLock(c, lease, sent, replayed, false)
	l.onSession, l.releaseOnClose = true, releaseOnClose
	return l
}

// Name returns the lock's name.
func (l *Lock) Name() string { return l.lease.Key.Name }

// Scope returns the lock's scope.
func (l *Lock) Scope() Scope { return Scope(l.lease.Key.Scope()) }

// Mode returns the mode of the lease.
func (l *Lock) Mode() dlm.Mode { return l.lease.Mode }

// Token returns the lease's fencing token: greater than every token issued
// before on this lock. Send it with every write the lock protects.
func (l *Lock) Token() int64 { return l.lease.Token }

// Replayed reports whether the server answered the acquire with the live
// lease of an earlier request with the same idempotency key (AcquireOptions)
// rather than a new grant.
func (l *Lock) Replayed() bool { return l.replayed }

// LeaseID returns the lease's ID, the capability that renews and releases
// it. Do not show it to others.
func (l *Lock) LeaseID() string { return l.lease.ID }

// ExpiresAt returns the time, on this machine's clock, until which the lease
// is known to be held: the send time of the last confirmed acquire or renewal
// plus its TTL. The server's expires_at is later by the request's latency.
func (l *Lock) ExpiresAt() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.deadline
}

// Lease returns the lease as last confirmed by the server, with the server's
// TTL and expires_at.
func (l *Lock) Lease() dlm.Lease {
	l.mu.Lock()
	defer l.mu.Unlock()
	lease := l.lease
	lease.TTL, lease.ExpiresAt = l.ttl, l.server
	return lease
}

// Lost returns a channel closed when the lease is lost (see Lock). It is not
// closed by a successful Release.
func (l *Lock) Lost() <-chan struct{} { return l.lost }

// Context returns a context cancelled the moment the lease is lost, with
// cause Err(), or released, with cause ErrReleased. Pass it to the work the
// lock protects.
func (l *Lock) Context() context.Context { return l.ctx }

// Err returns nil while the lease is held and after a successful Release.
// Once the lease is lost it returns an error matching ErrLockLost, joined
// with why: a *dlm.Error (errors.Is dlm.ErrLeaseEnded, with Reason) when the
// server ended it, or the last renewal failure when no renewal could be
// confirmed in time.
func (l *Lock) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// Renew extends the lease by its TTL now, retrying transient failures until
// ctx ends or the client's RetryTimeout passes. If the server says the lease
// is over, the Lock is lost and the error matches dlm.ErrLeaseEnded (with
// Reason) or dlm.ErrNotFound. The keep-alive renews on its own; Renew is for
// locks acquired with NoKeepAlive or to extend one before a long step.
func (l *Lock) Renew(ctx context.Context) error {
	sent := time.Now()
	lease, err := l.c.Renew(ctx, l.lease.ID, 0)
	if err != nil {
		if final(err) {
			l.markLost(err)
		}
		return err
	}
	l.confirmed(lease, sent)
	return nil
}

// Release stops the keep-alive and ends the lease. It returns nil once the
// lease is released; a network error is retried, and an earlier attempt
// found to have gone through counts as success. If the lease had already
// ended otherwise, the error matches dlm.ErrLeaseEnded (Reason says why). On
// any other error the lease may or may not have been released; it is no
// longer renewed and ends at its expiry. Release cancels Context with cause
// ErrReleased. Calls after the first return the first's result; ctx bounds
// the call (use a fresh one, e.g. context.WithoutCancel, in deferred code).
func (l *Lock) Release(ctx context.Context) error {
	l.releaseOnce.Do(func() { l.releaseErr = l.release(ctx) })
	return l.releaseErr
}

func (l *Lock) release(ctx context.Context) error {
	l.kstop()
	<-l.done
	if l.onSession {
		l.c.sess.unfollow(l)
	}
	err := l.c.Release(ctx, l.lease.ID)
	switch {
	case err == nil:
		l.mu.Lock()
		l.released = true
		l.timer.Stop()
		l.mu.Unlock()
		l.cancel(ErrReleased)
	case final(err):
		l.markLost(err)
	}
	return err
}

// final reports whether err means the lease cannot be renewed any more:
// any refusal by the server other than a transient one.
func final(err error) bool {
	var e *dlm.Error
	return errors.As(err, &e) && !transient(err)
}

// keepAlive renews the lease until Release or loss.
func (l *Lock) keepAlive() {
	defer close(l.done)
	for {
		l.mu.Lock()
		deadline, ttl := l.deadline, l.ttl
		l.mu.Unlock()
		// Renew once a third of the TTL has passed, leaving two thirds for
		// retries before the lease is declared lost.
		if sleep(l.kctx, time.Until(deadline.Add(-2*ttl/3))) != nil {
			return
		}
		if l.atMaxHold() {
			<-l.kctx.Done() // ended by the loss timer at the max hold
			return
		}
		if !l.renewUntil(deadline.Add(-margin(ttl)), ttl) {
			// Lost, released, or out of time, when the loss timer ends
			// kctx; unless a manual Renew moved the deadline meanwhile.
			select {
			case <-l.kctx.Done():
				return
			case <-l.renewed:
			}
		}
	}
}

// renewUntil renews the lease, retrying transient failures until lostAt, when
// the loss timer takes over. It reports whether a renewal was confirmed.
func (l *Lock) renewUntil(lostAt time.Time, ttl time.Duration) bool {
	ctx, cancel := context.WithDeadline(l.kctx, lostAt)
	defer cancel()
	for attempt := 0; ; attempt++ {
		// An attempt may take all the time left: a slow server is far
		// more common than a hung connection, and cutting a slow renewal
		// short only loads the server with another.
		sent := time.Now()
		lease, err := l.c.renewOnce(ctx, l.lease.ID, 0)
		if err == nil {
			l.confirmed(lease, sent)
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		if final(err) {
			l.markLost(err)
			return false
		}
		l.mu.Lock()
		l.renewErr = err
		l.mu.Unlock()
		if sleep(ctx, backoff(attempt, 25*time.Millisecond, min(ttl/6, time.Second))) != nil {
			return false
		}
	}
}

// confirmed records a renewal that the server confirmed, sent at sent.
func (l *Lock) confirmed(lease *dlm.Lease, sent time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil || l.released {
		return // loss is final
	}
	l.ttl, l.server, l.renewErr = lease.TTL, lease.ExpiresAt, nil
	if d := l.capLocked(sent.Add(lease.TTL)); d.After(l.deadline) {
		l.deadline = d
		l.timer.Stop()
		l.timer.Reset(time.Until(d.Add(-margin(lease.TTL))))
	}
	select {
	case l.renewed <- struct{}{}:
	default:
	}
}

// capLocked returns d, or holdEnd if that is earlier.
func (l *Lock) capLocked(d time.Time) time.Time {
	if !l.holdEnd.IsZero() && l.holdEnd.Before(d) {
		return l.holdEnd
	}
	return d
}

// atMaxHold reports whether the lease is known held until its max hold: no
// renewal can extend it.
func (l *Lock) atMaxHold() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return !l.holdEnd.IsZero() && !l.deadline.Before(l.holdEnd)
}

// expire runs when the known expiry (less the margin) passes.
func (l *Lock) expire() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if time.Now().Before(l.deadline.Add(-margin(l.ttl))) {
		return // a renewal moved the deadline after the timer fired
	}
	cause := errors.New("no renewal confirmed before the lease's expiry")
	if l.deadline.Equal(l.holdEnd) {
		cause = errors.New("the lease reached its max hold")
	}
	if l.renewErr != nil {
		cause = fmt.Errorf("%w: %w", cause, l.renewErr)
	}
	l.loseLocked(cause)
}

func (l *Lock) markLost(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.loseLocked(err)
}

func (l *Lock) loseLocked(err error) {
	if l.err != nil || l.released {
		return
	}
	l.err = fmt.Errorf("%w: %q: %w", ErrLockLost, l.lease.Key.Name, err)
	l.timer.Stop()
	l.kstop()
	if l.onSession {
		l.c.sess.poke() // its keep-alive forgets the lock, and ends with the last
	}
	close(l.lost)
	l.cancel(l.err)
}
