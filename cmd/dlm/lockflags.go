package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"time"

	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/client"
)

// lockFlags are the acquire options shared by run and acquire.
type lockFlags struct {
	shared bool
	ttl    time.Duration
	wait   waitFlag
	scope  scopeFlag
	holder string
	// releaseOnClose: run's --release-on-exit.
	releaseOnClose bool
	limit          int
	lockDelay      time.Duration
	maxHold        time.Duration
}

func (f *lockFlags) register(fs *flag.FlagSet) {
	fs.BoolVar(&f.shared, "shared", false, "take a shared lock (compatible with other shared holders) instead of an exclusive one")
	fs.DurationVar(&f.ttl, "ttl", 0, "lease length (default the server's, 30s)")
	fs.Var(&f.wait, "wait", "how long to wait for the lock: a duration, 0 to try once, or forever (the default)")
	fs.Var(&f.scope, "scope", "lock scope: tenant or global")
	fs.StringVar(&f.holder, "holder", "", "holder id shown to others (default hostname:pid; with --idempotency-key, hostname)")
	fs.IntVar(&f.limit, "limit", 0, "take one of N permits: a semaphore of at most N shared holders (implies --shared; every user of the lock must give the same N)")
	fs.DurationVar(&f.lockDelay, "lock-delay", 0, "if the lease ends by expiry or force-release, nobody gets the lock for this long after (at most 1m)")
	fs.DurationVar(&f.maxHold, "max-hold", 0, "never hold the lease longer than this, renewals or not (at least 100ms)")
}

func (f *lockFlags) options() *client.AcquireOptions {
	o := &client.AcquireOptions{TTL: f.ttl, Wait: f.wait.d, Scope: client.Scope(f.scope), HolderID: f.holder, ReleaseOnClose: f.releaseOnClose,
		Limit: f.limit, LockDelay: f.lockDelay, MaxHold: f.maxHold}
	if f.shared || f.limit != 0 {
		o.Mode = dlm.Shared
	}
	return o
}

// acquire takes the lock as the flags say, showing progress on stderr while
// it waits if stderr is a terminal.
func (f *lockFlags) acquire(ctx context.Context, c *client.Client, name string, o *client.AcquireOptions, stderr io.Writer) (*client.Lock, error) {
	if f.wait.set && f.wait.d == 0 {
		return c.TryAcquire(ctx, name, o)
	}
	// Try once first: most locks are free, and a held one lets the
	// progress line say who holds it.
	l, err := c.TryAcquire(ctx, name, o)
	if !isConflict(err) {
		return l, err
	}
	stop := startProgress(stderr, name, err)
	defer stop()
	return c.Acquire(ctx, name, o)
}

// acquireMany takes every lock of names at once, as acquire takes one.
func (f *lockFlags) acquireMany(ctx context.Context, c *client.Client, names []string, o *client.AcquireOptions, stderr io.Writer) ([]*client.Lock, error) {
	specs := make([]client.LockSpec, len(names))
	for i, n := range names {
		specs[i] = client.LockSpec{Name: n, Mode: o.Mode, Scope: o.Scope, Limit: o.Limit}
	}
	ls, err := c.TryAcquireMany(ctx, specs, o)
	if f.wait.set && f.wait.d == 0 || !isConflict(err) {
		return ls, err
	}
	var e *dlm.Error
	blocker := names[0]
	if errors.As(err, &e) && e.Lock != "" {
		blocker = e.Lock
	}
	stop := startProgress(stderr, blocker, err)
	defer stop()
	return c.AcquireMany(ctx, specs, o)
}
