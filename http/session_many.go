package dlmhttp

import (
	"context"
	"errors"

	"github.com/dlmhq/dlm"
)

// acquireMany serves the session op acquire_many: POST /v1/acquire on the
// session, whose leases the session then follows one by one, as if each
// were acquired on its own.
func (s *session) acquireMany(ctx context.Context, o object) (any, error) {
	req, err := acquireManyBody(o, s.tenant)
	if err != nil {
		return nil, err
	}
	if key, given, err := o.string("idempotency_key"); err != nil {
		return nil, err
	} else if given {
		if err := dlm.ValidateIdempotencyKey(key); err != nil {
			return nil, err
		}
		req.IdempotencyKey = key
	}
	releaseOnClose, _, err := o.bool("release_on_close")
	if err != nil {
		return nil, err
	}
	// Follow the locks before the grant, so that no end of them is missed.
	for _, l := range req.Locks {
		s.ln.Follow(l.Key)
	}
	ls, replayed, err := s.h.engine.AcquireMany(ctx, req)
	if err != nil {
		for _, l := range req.Locks {
			s.ln.Unfollow(l.Key)
		}
		if cause := context.Cause(ctx); errors.Is(cause, errCancelled) && errors.Is(err, context.Canceled) {
			return nil, errCancelled
		}
		return nil, err
	}
	for i := range ls {
		s.hold(&ls[i], releaseOnClose)
	}
	return ownLeases(ls, replayed), nil
}
