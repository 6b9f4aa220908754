package main

import (
	"context"
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
}

func (f *lockFlags) register(fs *flag.FlagSet) {
	fs.BoolVar(&f.shared, "shared", false, "take a shared lock (compatible with other shared holders) instead of an exclusive one")
	fs.DurationVar(&f.ttl, "ttl", 0, "lease length (default the server's, 30s)")
	fs.Var(&f.wait, "wait", "how long to wait for the lock: a duration, 0 to try once, or forever (the default)")
	fs.Var(&f.scope, "scope", "lock scope: tenant or global")
	fs.StringVar(&f.holder, "holder", "", "holder id shown to others (default hostname:pid; with --idempotency-key, hostname)")
}

func (f *lockFlags) options() *client.AcquireOptions {
	o := &client.AcquireOptions{TTL: f.ttl, Wait: f.wait.d, Scope: client.Scope(f.scope), HolderID: f.holder, ReleaseOnClose: f.releaseOnClose}
	if f.shared {
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
