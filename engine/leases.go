package engine

import (
	"context"
	"time"

	"github.com/dlmhq/dlm"
)

// findOwn looks up lease id for tenant. A lease of another tenant is reported
// exactly like an unknown one (not_found); an ended one as lease_ended with
// its reason. The lease returned may have expired without being swept.
func findOwn(ctx context.Context, tx dlm.ReadTx, tenant, id string) (*dlm.Lease, error) {
	l, ended, err := tx.FindLease(ctx, id)
	if err != nil {
		return nil, err
	}
	switch {
	case l != nil && l.Tenant == tenant:
		return l, nil
	case ended != nil && ended.Tenant == tenant:
		return nil, leaseEnded(ended.Reason)
	}
	return nil, dlm.Errorf(dlm.CodeNotFound, "no lease %q", id)
}

func leaseEnded(why dlm.EndReason) *dlm.Error {
	return &dlm.Error{Code: dlm.CodeLeaseEnded, Message: "lease has ended: " + why.String(), Reason: why}
}

// whyEnded explains why lease id, found a moment ago, no longer holds: it
// expired just now (in c), or another transaction ended it in between.
func whyEnded(ctx context.Context, tx dlm.ReadTx, id string, c *dlm.Change) error {
	for _, e := range c.Ended {
		if e.ID == id {
			return leaseEnded(e.Reason)
		}
	}
	if _, ended, err := tx.FindLease(ctx, id); err != nil {
		return err
	} else if ended != nil {
		return leaseEnded(ended.Reason)
	}
	return leaseEnded(dlm.Expired)
}

// Lease returns tenant's lease id if it is held.
//
// Errors: not_found (unknown or another tenant's), lease_ended (with the
// reason; a lease past its expiry is expired even before the sweeper ends it).
func (e *Engine) Lease(ctx context.Context, tenant, id string) (l dlm.Lease, err error) {
	err = e.store.View(ctx, func(tx dlm.ReadTx) error {
		found, err := findOwn(ctx, tx, tenant, id)
		if err != nil {
			return err
		}
		if !found.Live(tx.Now()) {
			return leaseEnded(dlm.Expired)
		}
		l = *found
		return nil
	})
	return l, err
}

// Renew extends tenant's lease id to now+ttl; ttl 0 means the lease's own
// TTL, and a given ttl becomes the lease's TTL. The token does not change and
// an expired lease is never revived.
//
// Errors: invalid_argument, not_found, lease_ended.
func (e *Engine) Renew(ctx context.Context, tenant, id string, ttl time.Duration) (l dlm.Lease, err error) {
	if ttl != 0 {
		if err := e.checkTTL(ttl); err != nil {
			return dlm.Lease{}, err
		}
	}
	var result error
	err = e.update(ctx, func(tx dlm.Tx) ([]dlm.Change, error) {
		found, err := findOwn(ctx, tx, tenant, id)
		if err != nil {
			result = err
			return nil, nil
		}
		return e.saveOne(ctx, tx, found.Key, func(s *dlm.LockState, now time.Time, c *dlm.Change) error {
			var ok bool
			if l, ok = s.Renew(now, id, ttl, c); !ok {
				result = whyEnded(ctx, tx, id, c)
			}
			return nil
		})
	})
	if err == nil {
		err = result
	}
	return l, err
}

// Release ends tenant's lease id and grants the waiters it blocked. It
// returns the lease as it was when it ended.
//
// Errors: not_found, lease_ended (it had already ended: released, expired
// or force-released). After an unavailable error the release may have
// happened; retrying then answers lease_ended.
func (e *Engine) Release(ctx context.Context, tenant, id string) (l dlm.Lease, err error) {
	var result error
	err = e.update(ctx, func(tx dlm.Tx) ([]dlm.Change, error) {
		found, err := findOwn(ctx, tx, tenant, id)
		if err != nil {
			result = err
			return nil, nil
		}
		return e.saveOne(ctx, tx, found.Key, func(s *dlm.LockState, now time.Time, c *dlm.Change) error {
			ended, ok := s.Release(now, id, c)
			if !ok {
				result = whyEnded(ctx, tx, id, c)
			}
			l = ended.Lease
			return nil
		})
	})
	if err == nil {
		err = result
	}
	return l, err
}

// ForceRelease ends every lease on key with reason force_released and grants
// the waiters. It is an admin operation; the caller checks the permission.
func (e *Engine) ForceRelease(ctx context.Context, key dlm.Key) (ended []dlm.EndedLease, err error) {
	if err := dlm.ValidateName(key.Name); err != nil {
		return nil, err
	}
	err = e.update(ctx, func(tx dlm.Tx) ([]dlm.Change, error) {
		return e.saveOne(ctx, tx, key, func(s *dlm.LockState, now time.Time, c *dlm.Change) error {
			ended = s.ForceRelease(now, c)
			return nil
		})
	})
	return ended, err
}
