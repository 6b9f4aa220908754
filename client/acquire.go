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
}

type acquireBody struct {
	HolderID       string `json:"holder_id"`
	Mode           string `json:"mode"`
	TTLMs          int64  `json:"ttl_ms,omitempty"`
	WaitMs         int64  `json:"wait_ms"`
	Scope          string `json:"scope"`
	IdempotencyKey string `json:"idempotency_key,omitempty"`
	DryRun         bool   `json:"dry_run,omitempty"`
}

func (c *Client) acquireBody(name string, o *AcquireOptions) (acquireBody, error) {
	if o == nil {
		o = &AcquireOptions{}
	}
	if err := dlm.ValidateName(name); err != nil {
		return acquireBody{}, err
	}
	b := acquireBody{HolderID: o.HolderID, Mode: o.Mode.String(), TTLMs: o.TTL.Milliseconds(), IdempotencyKey: o.IdempotencyKey}
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
	return c.acquire(ctx, name, b, opts, 0)
}

// Acquire waits for the lock, FIFO behind earlier waiters, until it is
// granted, opts.Wait passes or ctx ends, and returns a Lock whose lease
// renews itself (see Lock).
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
	for {
		// Ask the server for the longest wait it allows, unless the
		// caller's limit comes first; then this request is the last.
		wait, last := c.maxWait, false
		if !giveUp.IsZero() && time.Until(giveUp) <= wait {
			wait, last = time.Until(giveUp), true
		}
		if dl, ok := ctx.Deadline(); ok {
			// Leave the server time to answer before ctx ends: half of
			// what is left, at most 1s (a busy server's commit and the
			// round trip).
			left := time.Until(dl)
			if w := left - min(left/2, time.Second); w <= wait {
				wait, last = w, true
			}
		}
		if wait < time.Millisecond {
			if ctx.Err() != nil {
				return nil, ctxErr(ctx, nil)
			}
			return nil, opError("acquire", name, dlm.Errorf(dlm.CodeWaitTimeout, "no time left to wait"))
		}
		l, err := c.acquire(ctx, name, b, opts, wait)
		if last || !errors.Is(err, dlm.ErrWaitTimeout) {
			return l, err
		}
		// The server's longest wait ran out; ask again. The same
		// idempotency key still names this call's one lease.
	}
}

// acquire sends one acquire (retried on transient errors) that waits up to
// wait on the server, and wraps the lease in a Lock.
func (c *Client) acquire(ctx context.Context, name string, b acquireBody, opts *AcquireOptions, wait time.Duration) (*Lock, error) {
	b.WaitMs = wait.Milliseconds()
	var w wire.Lease
	sent := time.Now()
	err := c.do(ctx, request{
		method: http.MethodPost, path: lockPath(name, "/acquire"),
		body: b, idem: b.IdempotencyKey, wait: wait,
	}, &w)
	if err != nil {
		return nil, opError("acquire", name, err)
	}
	lease := leaseOf(&w)
	if !time.Now().Before(sent.Add(lease.TTL - margin(lease.TTL))) {
		// Granted after a wait so long that the send time no longer
		// proves the lease held: confirm it with a renewal.
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
	return newLock(c, lease, sent, opts == nil || !opts.NoKeepAlive), nil
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
