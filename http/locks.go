package dlmhttp

import (
	"context"
	"errors"
	"net/http"

	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/engine"
	"github.com/dlmhq/dlm/wire"
)

// acquireFields are the fields of an acquire body (the acquire call of the API).
var acquireFields = []string{"holder_id", "mode", "ttl_ms", "wait_ms", "scope", "idempotency_key", "dry_run", "limit", "lock_delay_ms", "max_hold_ms"}

// acquireRequest decodes an acquire: the body, the Idempotency-Key header and
// the lock name from the path. Omitted fields are left zero for the engine
// to default; given ones are checked here where the engine could not tell
// them from omitted ones (ttl_ms 0, an empty mode, scope or key).
func (h *Handler) acquireRequest(w http.ResponseWriter, r *http.Request, c *call) (req engine.AcquireRequest, dryRun bool, err error) {
	o, err := readObject(w, r, acquireFields...)
	if err != nil {
		return req, false, err
	}
	if dryRun, err = acquireBody(o, &req, c.principal.Tenant, c.params.get("name")); err != nil {
		return req, false, err
	}
	if req.IdempotencyKey, err = idempotencyKey(r, o); err != nil {
		return req, false, err
	}
	return req, dryRun, nil
}

// acquireBody decodes the fields of an acquire body o, but for the
// idempotency key, into req: for tenant, on the lock name.
func acquireBody(o object, req *engine.AcquireRequest, tenant, name string) (dryRun bool, err error) {
	if err := dlm.ValidateName(name); err != nil {
		return false, err
	}
	t, err := leaseBody(o)
	if err != nil {
		return false, err
	}
	l, err := lockSpec(o, tenant, name)
	if err != nil {
		return false, err
	}
	*req = engine.AcquireRequest{
		Tenant: tenant, Key: l.Key, Mode: l.Mode, HolderID: t.holder, TTL: t.ttl, Wait: t.wait,
		Limit: l.Limit, LockDelay: t.lockDelay, MaxHold: t.maxHold,
	}
	dryRun, _, err = o.bool("dry_run")
	return dryRun, err
}

// idempotencyKey returns the idempotency key of an acquire, given in the
// body, the Idempotency-Key header, or both with the same value. A key given
// empty is refused rather than read as "none".
func idempotencyKey(r *http.Request, o object) (string, error) {
	body, inBody, err := o.string("idempotency_key")
	if err != nil {
		return "", err
	}
	hdrs := r.Header.Values("Idempotency-Key")
	if len(hdrs) > 1 {
		return "", dlm.Invalid("idempotency_key", "Idempotency-Key header given %d times", len(hdrs))
	}
	key := body
	if len(hdrs) == 1 {
		if inBody && hdrs[0] != body {
			return "", dlm.Invalid("idempotency_key", "the Idempotency-Key header and the body field differ")
		}
		key, inBody = hdrs[0], true
	}
	if inBody {
		if err := dlm.ValidateIdempotencyKey(key); err != nil {
			return "", err
		}
	}
	return key, nil
}

// acquire serves POST /v1/locks/{name}/acquire: try once, wait in the FIFO
// queue (the request stays open up to wait_ms), or dry run.
func (h *Handler) acquire(w http.ResponseWriter, r *http.Request, c *call) error {
	req, dryRun, err := h.acquireRequest(w, r, c)
	if err != nil {
		return err
	}
	if dryRun {
		res, err := h.engine.DryRun(r.Context(), req)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, wireDryRun{WouldGrant: res.WouldGrant, Holders: wire.Holders(res.Holders), Waiters: res.Waiters})
		return nil
	}
	// Revoking the key withdraws the acquire if it is queued.
	ctx, release := h.engine.KeyContext(r.Context(), c.principal.KeyID)
	defer release()
	l, replayed, err := h.engine.Acquire(ctx, req)
	if errors.Is(context.Cause(ctx), engine.ErrKeyRevoked) {
		if err == nil && !replayed {
			// Granted as the key was revoked: nobody may have it.
			_, err = h.engine.Release(context.WithoutCancel(ctx), req.Tenant, l.ID)
		}
		return errors.Join(engine.ErrKeyRevoked, err)
	}
	if err != nil {
		return err
	}
	wl := wire.OwnLease(&l)
	wl.Replayed = replayed
	writeLease(w, &wl)
	return nil
}

// lockKey returns the key of the lock named in the path, in the namespace
// the call addresses.
func (h *Handler) lockKey(r *http.Request, c *call) (dlm.Key, error) {
	name := c.params.get("name")
	if err := dlm.ValidateName(name); err != nil {
		return dlm.Key{}, err
	}
	ns, err := h.namespace(r.Context(), c)
	return dlm.Key{Namespace: ns, Name: name}, err
}

// inspect serves GET /v1/locks/{name}: token, holders and waiters; a name
// never used answers with token 0 and empty lists.
func (h *Handler) inspect(w http.ResponseWriter, r *http.Request, c *call) error {
	key, err := h.lockKey(r, c)
	if err != nil {
		return err
	}
	s, err := h.engine.Inspect(r.Context(), key)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, wire.FromLock(&s))
	return nil
}

// list serves GET /v1/locks: the locks with holders or waiters, by name.
func (h *Handler) list(w http.ResponseWriter, r *http.Request, c *call) error {
	prefix, _ := c.query.get("prefix")
	if err := dlm.ValidatePrefix(prefix); err != nil {
		return err
	}
	limit, err := c.query.int("limit", 1, engine.MaxListLimit, engine.DefaultListLimit)
	if err != nil {
		return err
	}
	cursor, _ := c.query.get("cursor")
	ns, err := h.namespace(r.Context(), c)
	if err != nil {
		return err
	}
	locks, next, err := h.engine.List(r.Context(), ns, prefix, cursor, limit)
	if err != nil {
		return err
	}
	out := wireLockList{Locks: make([]wire.Lock, len(locks)), NextCursor: next}
	for i := range locks {
		out.Locks[i] = wire.FromLock(&locks[i])
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// forceRelease serves POST /v1/locks/{name}/force-release (admin key): every
// lease on the lock ends with reason force_released.
func (h *Handler) forceRelease(w http.ResponseWriter, r *http.Request, c *call) error {
	if _, err := readObject(w, r); err != nil {
		return err
	}
	key, err := h.lockKey(r, c)
	if err != nil {
		return err
	}
	ended, err := h.engine.ForceRelease(r.Context(), key)
	if err != nil {
		return err
	}
	out := wireEnded{Ended: make([]wire.Lease, len(ended))}
	for i := range ended {
		out.Ended[i] = wire.Holder(&ended[i].Lease)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}
