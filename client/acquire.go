package client

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"net/http"
	"time"

	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/wire"
)

// AcquireOptions are the options of an acquire. The zero value of every
// field means its default, so a nil *AcquireOptions is all defaults.
type AcquireOptions struct {
	// Mode is dlm.Exclusive (the default) or dlm.Shared.
	Mode dlm.Mode
	// TTL is the lease length. Default: the server's default, 30s. The
	// server refuses less than 100ms.
	TTL time.Duration
	// Wait bounds how long Acquire queues for the lock. Default: until
	// ctx ends. TryAcquire ignores it.
	Wait time.Duration
	// Scope is ScopeTenant (the default) or ScopeGlobal.
	Scope Scope
	// HolderID names the holder in lock views and events. Default: the
	// client's HolderID.
	HolderID string
	// IdempotencyKey makes the acquire idempotent: the server answers a
	// repeated request with the same key with the same lease while that
	// lease is live. Default: a fresh random key for each Acquire or
	// TryAcquire call, which every retry of that call reuses, so a
	// retried call never takes a second lease.
	IdempotencyKey string
	// NoKeepAlive stops the returned Lock from renewing its lease in the
	// background. The Lock still reports the lease lost at its expiry
	// unless Renew extends it. Default: false, keep the lease alive.
	NoKeepAlive bool
	// ReleaseOnClose has the server release the lease when the client's
	// session ends: closed, broken, or silent for 30 s. The Lock is
	// declared lost the moment the client sees its session break, before
	// the server releases it. This is what leader election stands on. It
	// needs a session: with Options.HTTPOnly, or a server without
	// sessions, the acquire fails with dlm.ErrUnavailable.
	ReleaseOnClose bool
	// Limit, with Mode dlm.Shared, makes the lock a semaphore of at most
	// Limit holders (see Client.Semaphore). Every holder and waiter of a
	// lock must give the same Limit. Default: none.
	Limit int
	// LockDelay keeps the lock from being granted to anybody for this long
	// after the lease ends by expiry or force-release (not by Release), so
	// that a holder that lost the lock unknowingly has time to notice.
	// Default: none; at most 60s.
	LockDelay time.Duration
	// MaxHold bounds the lease: renewals never extend it past its grant
	// plus MaxHold, and the Lock is lost then. Default: none; at least
	// 100ms.
	MaxHold time.Duration
}

type acquireBody struct {
	HolderID       string `json:"holder_id"`
	Mode           string `json:"mode"`
	TTLMs          int64  `json:"ttl_ms,omitempty"`
	WaitMs         int64  `json:"wait_ms"`
	Scope          string `json:"scope"`
	IdempotencyKey string `json:"idempotency_key,omitempty"`
	DryRun         bool   `json:"dry_run,omitempty"`
	Limit          int    `json:"limit,omitempty"`
	LockDelayMs    int64  `json:"lock_delay_ms,omitempty"`
	MaxHoldMs      int64  `json:"max_hold_ms,omitempty"`
	// Session only.
	ReleaseOnClose bool `json:"-"`
	// onSession: the lock is to be kept alive, which a session does best.
	onSession bool
}

func (c *Client) acquireBody(name string, o *AcquireOptions) (acquireBody, error) {
	if o == nil {
		o = &AcquireOptions{}
	}
	if err := dlm.ValidateName(name); err != nil {
		return acquireBody{}, err
	}
	b := acquireBody{HolderID: o.HolderID, Mode: o.Mode.String(), TTLMs: o.TTL.Milliseconds(), IdempotencyKey: o.IdempotencyKey,
		ReleaseOnClose: o.ReleaseOnClose, onSession: !o.NoKeepAlive || o.ReleaseOnClose,
		Limit: o.Limit, LockDelayMs: o.LockDelay.Milliseconds(), MaxHoldMs: o.MaxHold.Milliseconds()}
	switch {
	case o.Mode == 0:
		b.Mode = dlm.Exclusive.String()
	case o.Mode != dlm.Exclusive && o.Mode != dlm.Shared:
		return b, dlm.Invalid("mode", "unknown mode %d", o.Mode)
	}
	if o.TTL < 0 || o.TTL > 0 && b.TTLMs == 0 {
		return b, dlm.Invalid("ttl_ms", "must be at least %dms", dlm.MinTTLMillis)
	}
	if o.Wait < 0 {
		return b, dlm.Invalid("wait_ms", "must not be negative")
	}
	if err := checkTerms(o); err != nil {
		return b, err
	}
	if b.HolderID == "" {
		b.HolderID = c.holder
	}
	if b.IdempotencyKey == "" {
		b.IdempotencyKey = newIdempotencyKey()
	}
	var err error
	b.Scope, err = o.Scope.wire()
	return b, err
}

// checkTerms refuses terms that no server would take, before any request.
// The server checks the ranges.
func checkTerms(o *AcquireOptions) error {
	switch {
	case o.Limit < 0:
		return dlm.Invalid("limit", "must not be negative")
	case o.LockDelay < 0:
		return dlm.Invalid("lock_delay_ms", "must not be negative")
	case o.MaxHold < 0 || o.MaxHold > 0 && o.MaxHold < time.Millisecond:
		return dlm.Invalid("max_hold_ms", "must be at least %dms", dlm.MinTTLMillis)
	}
	return nil
}

// newIdempotencyKey returns 128 random bits, base64url.
func newIdempotencyKey() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// TryAcquire asks for the lock once, without queueing. It fails with an
// error matching dlm.ErrLockConflict (whose *dlm.Error lists the Holders)
// if the lock is held incompatibly or has waiters.
//
// Network errors and 503s are retried with the same idempotency key, so a
// retry returns the lease an earlier attempt may have been granted instead
// of taking a second one. On any other error no lease was taken, except
// when ctx ended: a lease granted to a request in flight then expires after
// its TTL. Other codes: invalid_argument, unauthenticated, limit_exceeded,
// idempotency_key_reused (the key was used for a different request).
func (c *Client) TryAcquire(ctx context.Context, name string, opts *AcquireOptions) (*Lock, error) {
	b, err := c.acquireBody(name, opts)
	if err != nil {
		return nil, err
	}
	g := c.acquireOnce(ctx, name, b, 0)
	if g.err != nil {
		return nil, opError("acquire", name, g.err)
	}
	return c.lock(ctx, name, g, opts)
}

// Acquire waits for the lock, FIFO behind earlier waiters, until it is
// granted, opts.Wait passes or ctx ends, and returns a Lock whose lease
// renews itself (see Lock).
//
// A wait longer than the server allows one request (its --max-wait) is
// made of several requests with the same idempotency key, each sent a
// little before the one before it runs out: it takes over that request's
// queue entry, so the call keeps its FIFO place however long it waits.
//
// If opts.Wait passes, or ctx's deadline is too close to wait any longer,
// the error matches dlm.ErrWaitTimeout. If ctx ends first the error is joined
// with ctx.Err(). The server is asked to stop waiting a little before ctx's
// deadline so that it can answer in time. Retries and the other errors are
// as for TryAcquire.
func (c *Client) Acquire(ctx context.Context, name string, opts *AcquireOptions) (*Lock, error) {
	b, err := c.acquireBody(name, opts)
	if err != nil {
		return nil, err
	}
	var giveUp time.Time // zero: wait until ctx ends
	if opts != nil && opts.Wait > 0 {
		giveUp = time.Now().Add(opts.Wait)
	}
	g, err := c.queue(ctx, giveUp, func(ctx context.Context, wait time.Duration) grant {
		return c.acquireOnce(ctx, name, b, wait)
	})
	if err != nil {
		return nil, opError("acquire", name, err)
	}
	return c.lock(ctx, name, g, opts)
}

// grant is the answer to one acquire request.
type grant struct {
	lease    dlm.Lease
	leases   []dlm.Lease // of a multi-lock acquire, in request order
	replayed bool        // the server answered with the live lease of an earlier request with the same key
	sent     time.Time   // when the request was sent: the lease is held until at least sent + TTL
	err      error
	seq      int       // which request of a queue call answered
	sc       *sessConn // the session connection that answered, if any
}

// acquireOnce sends one acquire (retried on transient errors) that waits up
// to wait on the server.
func (c *Client) acquireOnce(ctx context.Context, name string, b acquireBody, wait time.Duration) grant {
	b.WaitMs = wait.Milliseconds()
	var w wire.Lease
	sent := time.Now()
	sc, err := c.sessionDo(ctx, sessRequest{
		Op: "acquire", Name: name, HolderID: b.HolderID, Mode: b.Mode, TTLMs: b.TTLMs, WaitMs: b.WaitMs,
		Scope: b.Scope, IdempotencyKey: b.IdempotencyKey, ReleaseOnClose: b.ReleaseOnClose,
		Limit: b.Limit, LockDelayMs: b.LockDelayMs, MaxHoldMs: b.MaxHoldMs,
	}, request{
		method: http.MethodPost, path: lockPath(name, "/acquire"),
		body: b, idem: b.IdempotencyKey, wait: wait,
	}, &w, b.onSession)
	if err != nil {
		return grant{err: err}
	}
	return grant{lease: leaseOf(&w), replayed: w.Replayed, sent: sent, sc: sc}
}

// queue waits in acquire requests (sent by send, each waiting up to wait)
// no longer than the server allows, until one is granted, giveUp (zero:
// never) passes or ctx ends. Each request
// after the first is sent overlap() before the one before it runs out, with
// the same idempotency key, so that it takes over that request's queue entry
// and the call keeps its FIFO place; the answer of a request taken over
// (wait_timeout) is ignored.
func (c *Client) queue(ctx context.Context, giveUp time.Time, send func(ctx context.Context, wait time.Duration) grant) (grant, error) {
	ctx, cancel := context.WithCancel(ctx)
	answers := make(chan grant)
	inflight := 0
	defer func() {
		cancel()
		for ; inflight > 0; inflight-- {
			<-answers
		}
	}()
	var first time.Time // when the first request was sent
	takeOver := time.NewTimer(time.Hour)
	takeOver.Stop()
	defer takeOver.Stop()
	for seq := 1; ; seq++ {
		wait, last, err := c.nextWait(ctx, giveUp)
		if err != nil {
			return grant{}, err
		}
		if first.IsZero() {
			first = time.Now()
		}
		inflight++
		go func() {
			g := send(ctx, wait)
			g.seq = seq
			answers <- g
		}()
		var next <-chan time.Time // when to send the next request
		if !last {
			takeOver.Reset(wait - overlap(wait))
			next = takeOver.C
		}
	answered:
		for {
			select {
			case g := <-answers:
				inflight--
				switch {
				case g.err == nil:
					if g.replayed {
						// Granted to the queue entry of an earlier
						// request of this call: held since then.
						g.sent = first
					}
					return g, nil
				case g.seq < seq:
					continue // taken over by a later request
				case c.learnMaxWait(g.err, wait):
					break answered // ask again within the server's limit
				case errors.Is(g.err, dlm.ErrWaitTimeout) && !last:
					break answered // the next request was not in time: queue again
				}
				return grant{}, g.err
			case <-next:
				break answered
			}
		}
		takeOver.Stop()
	}
}

// overlap is how long before a request's wait runs out the next one is sent
// to take over its queue entry: a quarter of the wait, at most 1s, ample for
// the round trip and the server's commit.
func overlap(wait time.Duration) time.Duration { return min(wait/4, time.Second) }

// nextWait returns how long the next acquire request may ask the server to
// wait: the longest wait the server allows, unless giveUp or ctx's deadline
// comes first, and then last is true.
func (c *Client) nextWait(ctx context.Context, giveUp time.Time) (wait time.Duration, last bool, err error) {
	wait = time.Duration(c.maxWait.Load())
	if !giveUp.IsZero() && time.Until(giveUp) <= wait {
		wait, last = time.Until(giveUp), true
	}
	if dl, ok := ctx.Deadline(); ok {
		// Leave the server time to answer before ctx ends: half of what
		// is left, at most 1s (a busy server's commit and the round trip).
		left := time.Until(dl)
		if w := left - min(left/2, time.Second); w <= wait {
			wait, last = w, true
		}
	}
	if wait < time.Millisecond {
		if ctx.Err() != nil {
			return 0, true, ctxErr(ctx, nil)
		}
		return 0, true, dlm.Errorf(dlm.CodeWaitTimeout, "no time left to wait")
	}
	return wait, last, nil
}

// learnMaxWait reports whether err refuses a wait longer than the server
// allows, and if so keeps the server's maximum for the client's later
// requests.
func (c *Client) learnMaxWait(err error, asked time.Duration) bool {
	var de *dlm.Error
	if !errors.As(err, &de) || de.Code != dlm.CodeInvalidArgument || de.Field != "wait_ms" || de.Max <= 0 {
		return false
	}
	allowed := time.Duration(de.Max) * time.Millisecond
	if allowed >= asked {
		return false
	}
	c.maxWait.Store(int64(allowed))
	return true
}

// lock wraps a granted lease in a Lock. A grant that came so late that the
// send time no longer proves the lease held is first confirmed with a
// renewal.
func (c *Client) lock(ctx context.Context, name string, g grant, opts *AcquireOptions) (*Lock, error) {
	lease, sent := g.lease, g.sent
	if !time.Now().Before(sent.Add(lease.TTL - margin(lease.TTL))) {
		sent = time.Now()
		l, err := c.Renew(ctx, lease.ID, 0)
		if err != nil {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
			defer cancel()
			_ = c.Release(rctx, lease.ID) // best effort: it expires anyway
			return nil, opError("acquire", name, err)
		}
		lease = *l
	}
	keepAlive := opts == nil || !opts.NoKeepAlive
	if g.sc == nil {
		return newLock(c, lease, sent, g.replayed, keepAlive), nil
	}
	l := newSessionLock(c, lease, sent, g.replayed, opts != nil && opts.ReleaseOnClose)
	c.sess.follow(g.sc, l)
	if keepAlive {
		c.sess.keep(l)
	}
	return l, nil
}

// DryRun is the answer to WouldGrant.
type DryRun struct {
	WouldGrant bool        // an acquire with these options would be granted now
	Holders    []dlm.Lease // current holders, without lease IDs
	Waiters    int         // how many requests are queued
}

// WouldGrant reports whether an acquire of name with opts would be granted
// now, with no side effects (a dry run). opts.Wait and opts.IdempotencyKey
// are ignored.
func (c *Client) WouldGrant(ctx context.Context, name string, opts *AcquireOptions) (*DryRun, error) {
	b, err := c.acquireBody(name, opts)
	if err != nil {
		return nil, err
	}
	b.DryRun, b.IdempotencyKey = true, ""
	var w struct {
		WouldGrant bool         `json:"would_grant"`
		Holders    []wire.Lease `json:"holders"`
		Waiters    int          `json:"waiters"`
	}
	if err := c.do(ctx, request{method: http.MethodPost, path: lockPath(name, "/acquire"), body: b}, &w); err != nil {
		return nil, opError("dry-run acquire", name, err)
	}
	return &DryRun{WouldGrant: w.WouldGrant, Holders: leases(w.Holders), Waiters: w.Waiters}, nil
}
