package client

import (
	"context"

	"github.com/dlmhq/dlm"
)

// Semaphore is a name that up to Limit holders hold at once: a shared lock
// with a limit. Each permit is an ordinary Lock, kept alive, lost and
// released like any other.
type Semaphore struct {
	c     *Client
	name  string
	limit int
}

// Semaphore returns the semaphore of at most limit holders on name. Every
// user of name must give the same limit while it is held or queued for; a
// different one is refused with dlm.ErrInvalidArgument naming "limit".
func (c *Client) Semaphore(name string, limit int) *Semaphore {
	return &Semaphore{c: c, name: name, limit: limit}
}

// Acquire waits for a permit, FIFO behind earlier waiters, as
// Client.Acquire does. opts.Mode and opts.Limit are ignored.
func (s *Semaphore) Acquire(ctx context.Context, opts *AcquireOptions) (*Lock, error) {
	o, err := s.options(opts)
	if err != nil {
		return nil, err
	}
	return s.c.Acquire(ctx, s.name, o)
}

// TryAcquire asks for a permit once, as Client.TryAcquire does: the error
// matches dlm.ErrLockConflict when all permits are taken (or others wait).
func (s *Semaphore) TryAcquire(ctx context.Context, opts *AcquireOptions) (*Lock, error) {
	o, err := s.options(opts)
	if err != nil {
		return nil, err
	}
	return s.c.TryAcquire(ctx, s.name, o)
}

func (s *Semaphore) options(opts *AcquireOptions) (*AcquireOptions, error) {
	if s.limit < 1 {
		// Limit 0 would be an unbounded shared lock.
		return nil, dlm.Invalid("limit", "a semaphore needs at least 1 permit")
	}
	var o AcquireOptions
	if opts != nil {
		o = *opts
	}
	o.Mode, o.Limit = dlm.Shared, s.limit
	return &o, nil
}
