package client

import (
	"context"
	"net/http"
	"strings"
	"time"

	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/wire"
)

// LockSpec is one lock of a multi-lock acquire (AcquireMany).
type LockSpec struct {
	Name  string
	Mode  dlm.Mode // dlm.Exclusive (the default) or dlm.Shared
	Scope Scope    // ScopeTenant (the default) or ScopeGlobal
	Limit int      // with dlm.Shared: a semaphore of at most Limit holders
}

// manyRequest is a multi-lock acquire, checked.
type manyRequest struct {
	body      wire.AcquireManyBody
	names     string // for errors
	onSession bool
	roc       bool // release_on_close
}

func (c *Client) manyRequest(locks []LockSpec, opts *AcquireOptions) (manyRequest, error) {
	var o AcquireOptions
	if opts != nil {
		o = *opts
	}
	if o.IdempotencyKey == "" {
		// One key for the call: the server derives each lease's from it.
		o.IdempotencyKey = newIdempotencyKey()
	}
	r := manyRequest{body: wire.AcquireManyBody{Locks: make([]wire.LockRef, len(locks))}}
	names := make([]string, len(locks))
	var b acquireBody
	for i, l := range locks {
		o.Mode, o.Scope, o.Limit = l.Mode, l.Scope, l.Limit
		var err error
		if b, err = c.acquireBody(l.Name, &o); err != nil {
			return r, err
		}
		r.body.Locks[i] = wire.LockRef{Name: l.Name, Mode: b.Mode, Scope: b.Scope, Limit: b.Limit}
		names[i] = l.Name
	}
	r.names = strings.Join(names, ", ")
	r.body.HolderID, r.body.IdempotencyKey = b.HolderID, b.IdempotencyKey
	r.body.TTLMs = positive(b.TTLMs)
	r.body.LockDelayMs = positive(b.LockDelayMs)
	r.body.MaxHoldMs = positive(b.MaxHoldMs)
	r.onSession, r.roc = b.onSession, b.ReleaseOnClose
	return r, nil
}

// positive returns &n, or nil (the server's default) for 0.
func positive(n int64) *int64 {
	if n == 0 {
		return nil
	}
	return &n
}

// TryAcquireMany asks once for all of locks (2 to 64 distinct names)
// together: it is granted all of them in one commit, or none. The Locks are
// in the order of locks, each an ordinary Lock, renewed and released on its
// own. opts applies to every lock, except Mode, Scope and Limit, which each
// LockSpec gives.
//
// If a lock blocks the grant the error matches dlm.ErrLockConflict, and its
// *dlm.Error's Lock names that lock. Retries and the other errors are as for
// TryAcquire; a retry with the same idempotency key returns the leases
// still held and tries again for the rest.
func (c *Client) TryAcquireMany(ctx context.Context, locks []LockSpec, opts *AcquireOptions) ([]*Lock, error) {
	r, err := c.manyRequest(locks, opts)
	if err != nil {
		return nil, err
	}
	g := c.acquireManyOnce(ctx, r, 0)
	if g.err != nil {
		return nil, opError("acquire", r.names, g.err)
	}
	return c.locks(ctx, g, opts)
}

// AcquireMany waits for all of locks together, as Acquire waits for one: it
// queues on every lock at once, keeps its FIFO place on each and is granted
// when it can have them all. Two such calls never wait for each other. The
// wait and its errors are as for Acquire (dlm.ErrWaitTimeout's *dlm.Error
// names a lock in Lock); the rest as for TryAcquireMany.
func (c *Client) AcquireMany(ctx context.Context, locks []LockSpec, opts *AcquireOptions) ([]*Lock, error) {
	r, err := c.manyRequest(locks, opts)
	if err != nil {
		return nil, err
	}
	var giveUp time.Time
	if opts != nil && opts.Wait > 0 {
		giveUp = time.Now().Add(opts.Wait)
	}
	g, err := c.queue(ctx, giveUp, func(ctx context.Context, wait time.Duration) grant {
		return c.acquireManyOnce(ctx, r, wait)
	})
	if err != nil {
		return nil, opError("acquire", r.names, err)
	}
	return c.locks(ctx, g, opts)
}

// acquireManyOnce sends one multi-lock acquire (retried on transient
// errors) that waits up to wait on the server: over the session with the
// acquire_many op, or POST /v1/acquire.
func (c *Client) acquireManyOnce(ctx context.Context, r manyRequest, wait time.Duration) grant {
	b := r.body
	waitMs := wait.Milliseconds()
	b.WaitMs = &waitMs
	var w wire.Leases
	sent := time.Now()
	sc, err := c.sessionDo(ctx, sessRequest{
		Op: "acquire_many", Locks: b.Locks, HolderID: b.HolderID, TTLMs: deref(b.TTLMs), WaitMs: waitMs,
		IdempotencyKey: b.IdempotencyKey, ReleaseOnClose: r.roc, LockDelayMs: deref(b.LockDelayMs), MaxHoldMs: deref(b.MaxHoldMs),
	}, request{
		method: http.MethodPost, path: "/v1/acquire",
		body: b, idem: b.IdempotencyKey, wait: wait,
	}, &w, r.onSession)
	if err != nil {
		return grant{err: err}
	}
	if len(w.Leases) != len(b.Locks) {
		return grant{err: &dlm.Error{Code: dlm.CodeInternal, Message: "acquire answered the wrong number of leases"}}
	}
	return grant{leases: leases(w.Leases), replayed: w.Replayed, sent: sent, sc: sc}
}

func deref(p *int64) int64 {
	if p == nil {
		return 0
	}
	return *p
}

// locks wraps each lease of a multi-lock grant in a Lock, as lock does.
// If one cannot be confirmed, all are released and the call fails.
func (c *Client) locks(ctx context.Context, g grant, opts *AcquireOptions) ([]*Lock, error) {
	ls := make([]*Lock, 0, len(g.leases))
	for _, lease := range g.leases {
		one := g
		one.lease = lease
		l, err := c.lock(ctx, lease.Key.Name, one, opts)
		if err != nil {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
			defer cancel()
			for _, l := range ls {
				_ = l.Release(rctx) // best effort: they expire anyway
			}
			rest := g.leases[len(ls)+1:]
			for i := range rest {
				_ = c.Release(rctx, rest[i].ID)
			}
			return nil, err
		}
		ls = append(ls, l)
	}
	return ls, nil
}
