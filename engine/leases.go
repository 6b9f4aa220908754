package engine

import (
	"context"
	"time"

	"github.com/dlmhq/dlm"
)

// findOwn looks up lease id for tenant. A lease of another tenant is reported
// exactly like an unknown one (not_found); an ended one as lease_ended with
// its reason. The lease returned may have expired without being swept.
func findOwn(l *dlm.Lease, ended *dlm.EndedLease, tenant, id string) (*dlm.Lease, error) {
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
// expired just now (in c), or an earlier decision ended it.
func whyEnded(v *view, id string, c *dlm.Change) error {
	for _, e := range c.Ended {
		if e.ID == id {
			return leaseEnded(e.Reason)
		}
	}
	if _, ended := v.findLease(id); ended != nil {
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
		live, ended, err := tx.FindLease(ctx, id)
		if err != nil {
			return err
		}
		found, err := findOwn(live, ended, tenant, id)
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
	err = e.write(ctx, dlm.Need{Leases: []string{id}}, func(v *view) error {
		live, ended := v.findLease(id)
		found, err := findOwn(live, ended, tenant, id)
		if err != nil {
			return err
		}
		s := v.lock(found.Key)
		c := new(dlm.Change)
		var ok bool
		l, ok = s.Renew(v.now, id, ttl, c)
		v.save(s, c)
		if !ok {
			return whyEnded(v, id, c)
		}
		return nil
	})
	return l, err
}

// Release ends tenant's lease id and grants the waiters it blocked. It
// returns the lease as it was when it ended.
//
// Errors: not_found, lease_ended (it had already ended: released, expired
// or force-released). After an unavailable error the release may have
// happened; retrying then answers lease_ended.
func (e *Engine) Release(ctx context.Context, tenant, id string) (l dlm.Lease, err error) {
	err = e.write(ctx, dlm.Need{Leases: []string{id}}, func(v *view) error {
		live, ended := v.findLease(id)
		found, err := findOwn(live, ended, tenant, id)
		if err != nil {
			return err
		}
		s := v.lock(found.Key)
		c := new(dlm.Change)
		gone, ok := s.Release(v.now, id, c)
		v.save(s, c)
		if !ok {
			return whyEnded(v, id, c)
		}
		l = gone.Lease
		return nil
	})
	return l, err
}

// ForceRelease ends every lease on key with reason force_released and grants
// the waiters. It is an admin operation; the caller checks the permission.
func (e *Engine) ForceRelease(ctx context.Context, key dlm.Key) (ended []dlm.EndedLease, err error) {
	if err := dlm.ValidateName(key.Name); err != nil {
		return nil, err
	}
	err = e.write(ctx, dlm.Need{Keys: []dlm.Key{key}}, func(v *view) error {
		s := v.lock(key)
		c := new(dlm.Change)
		ended = s.ForceRelease(v.now, c)
		v.save(s, c)
		return nil
	})
	return ended, err
}
