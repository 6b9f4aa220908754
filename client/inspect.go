package client

import (
	"context"
	"fmt"
	"iter"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/wire"
)

// LockInfo is a lock as Inspect and List see it.
type LockInfo struct {
	Name    string
	Scope   Scope
	Token   int64       // the last fencing token issued, 0 if none
	Holders []dlm.Lease // live leases, without their IDs
	Waiters []Waiter    // in FIFO order
	// Limit is the lock's semaphore limit while its holders or waiters
	// gave one (0: none).
	Limit int
	// DelayUntil, if set, is when the lock-delay in force ends: nobody is
	// granted the lock before.
	DelayUntil time.Time
}

// Waiter is a request queued for a lock.
type Waiter struct {
	HolderID string
	Mode     dlm.Mode
	QueuedAt time.Time
	Deadline time.Time // when it stops waiting
	Limit    int       // the semaphore limit it asked for, if any
	// Locks is, for a multi-lock acquire (AcquireMany), how many locks it
	// waits for together.
	Locks int
}

// Inspect returns the holders and waiters of name in scope (zero: the
// tenant). A name never used answers with no holders, no waiters and token 0.
func (c *Client) Inspect(ctx context.Context, name string, scope Scope) (*LockInfo, error) {
	if err := dlm.ValidateName(name); err != nil {
		return nil, err
	}
	s, err := scope.wire()
	if err != nil {
		return nil, err
	}
	var w wire.Lock
	if err := c.do(ctx, request{method: http.MethodGet, path: lockPath(name, ""), query: url.Values{"scope": {s}}}, &w); err != nil {
		return nil, opError("inspect", name, err)
	}
	info := lockInfoOf(&w)
	return &info, nil
}

// ListOptions selects the locks List returns. Zero values are defaults.
type ListOptions struct {
	Prefix string // only names starting with Prefix; default all
	Scope  Scope  // default ScopeTenant
	Limit  int    // page size; default the server's
	Cursor string // resume after a page's NextCursor; default the start
}

// LockPage is one page of List.
type LockPage struct {
	Locks []LockInfo
	// NextCursor continues the listing in ListOptions.Cursor; "" after the
	// last page.
	NextCursor string
}

// List returns one page of the locks that have holders or waiters, ordered by
// name.
func (c *Client) List(ctx context.Context, opts *ListOptions) (*LockPage, error) {
	if opts == nil {
		opts = &ListOptions{}
	}
	if err := dlm.ValidatePrefix(opts.Prefix); err != nil {
		return nil, err
	}
	s, err := opts.Scope.wire()
	if err != nil {
		return nil, err
	}
	q := url.Values{"scope": {s}}
	if opts.Prefix != "" {
		q.Set("prefix", opts.Prefix)
	}
	if opts.Limit > 0 {
		q.Set("limit", strconv.Itoa(opts.Limit))
	}
	if opts.Cursor != "" {
		q.Set("cursor", opts.Cursor)
	}
	var w struct {
		Locks      []wire.Lock `json:"locks"`
		NextCursor string      `json:"next_cursor"`
	}
	if err := c.do(ctx, request{method: http.MethodGet, path: "/v1/locks", query: q}, &w); err != nil {
		return nil, fmt.Errorf("list locks: %w", err)
	}
	page := &LockPage{Locks: make([]LockInfo, len(w.Locks)), NextCursor: w.NextCursor}
	for i := range w.Locks {
		page.Locks[i] = lockInfoOf(&w.Locks[i])
	}
	return page, nil
}

// ListAll iterates over every lock List would return, page after page,
// starting at opts.Cursor. It stops after the first error, which it yields.
func (c *Client) ListAll(ctx context.Context, opts *ListOptions) iter.Seq2[LockInfo, error] {
	return func(yield func(LockInfo, error) bool) {
		o := ListOptions{}
		if opts != nil {
			o = *opts
		}
		for {
			page, err := c.List(ctx, &o)
			if err != nil {
				yield(LockInfo{}, err)
				return
			}
			for _, l := range page.Locks {
				if !yield(l, nil) {
					return
				}
			}
			if page.NextCursor == "" || page.NextCursor == o.Cursor {
				return
			}
			o.Cursor = page.NextCursor
		}
	}
}
