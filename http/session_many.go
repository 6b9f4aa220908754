package dlmhttp

import "context"

// acquireMany serves the session op acquire_many: POST /v1/acquire on the
// session, whose leases the session then follows one by one, as if each
// were acquired on its own.
func (s *session) acquireMany(ctx context.Context, o object) (any, error) {
	req, err := acquireManyBody(o, s.tenant)
	if err != nil {
		return nil, err
	}
	idem, releaseOnClose, err := sessionAcquireFields(o)
	if err != nil {
		return nil, err
	}
	req.IdempotencyKey = idem
	// Follow the locks before the grant, so that no end of them is missed.
	for _, l := range req.Locks {
		s.ln.Follow(l.Key)
	}
	ls, replayed, err := s.h.engine.AcquireMany(ctx, req)
	if err != nil {
		for _, l := range req.Locks {
			s.ln.Unfollow(l.Key)
		}
		return nil, cancelledAs(ctx, err)
	}
	for i := range ls {
		s.hold(&ls[i], releaseOnClose)
	}
	return ownLeases(ls, replayed), nil
}
