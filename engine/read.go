package engine

import (
	"context"
	"encoding/base64"

	"github.com/dlmhq/dlm"
)

// DryRunResult answers an acquire that only asks.
type DryRunResult struct {
	WouldGrant bool
	Holders    []dlm.Lease
	Waiters    int
}

// DryRun reports whether r would be granted now, without side effects.
func (e *Engine) DryRun(ctx context.Context, r AcquireRequest) (res DryRunResult, err error) {
	req, err := e.request(r)
	if err != nil {
		return res, err
	}
	err = e.store.View(ctx, func(tx dlm.ReadTx) error {
		s, err := tx.LoadLock(ctx, req.Key)
		if err != nil {
			return err
		}
		v := s.View(tx.Now())
		res = DryRunResult{WouldGrant: v.WouldGrant(tx.Now(), req.Mode, req.Limit), Holders: v.Holders, Waiters: len(v.Waiters)}
		return nil
	})
	return res, err
}

// Inspect returns the lock key as it stands now: its last fencing token, live
// holders and waiters. A never-used name has token 0 and empty lists.
func (e *Engine) Inspect(ctx context.Context, key dlm.Key) (v dlm.LockState, err error) {
	if err := dlm.ValidateName(key.Name); err != nil {
		return v, err
	}
	err = e.store.View(ctx, func(tx dlm.ReadTx) error {
		s, err := tx.LoadLock(ctx, key)
		if err == nil {
			v = s.View(tx.Now())
		}
		return err
	})
	return v, err
}

// Listing limits.
const (
	DefaultListLimit = 100
	MaxListLimit     = 1000
)

// List returns up to limit locks of namespace ns that have holders or
// waiters, ordered by name, starting after cursor; next is the cursor for the
// following page, "" at the end.
func (e *Engine) List(ctx context.Context, ns, prefix, cursor string, limit int) (locks []dlm.LockState, next string, err error) {
	if err := dlm.ValidatePrefix(prefix); err != nil {
		return nil, "", err
	}
	if limit == 0 {
		limit = DefaultListLimit
	}
	if limit < 0 || limit > MaxListLimit {
		return nil, "", dlm.Invalid("limit", "must be between 1 and %d", MaxListLimit)
	}
	after, err := base64.RawURLEncoding.DecodeString(cursor)
	if err != nil {
		return nil, "", dlm.Invalid("cursor", "is not a cursor this server made")
	}
	err = e.store.View(ctx, func(tx dlm.ReadTx) error {
		locks, err = tx.ListLocks(ctx, ns, prefix, string(after), limit+1)
		return err
	})
	if err != nil {
		return nil, "", err
	}
	if len(locks) > limit {
		locks = locks[:limit]
		next = base64.RawURLEncoding.EncodeToString([]byte(locks[limit-1].Key.Name))
	}
	if locks == nil {
		locks = []dlm.LockState{}
	}
	return locks, next, nil
}
