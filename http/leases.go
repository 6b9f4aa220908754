package dlmhttp

import (
	"net/http"

	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/wire"
)

// The lease routes act on a lease by its ID, the bearer capability only its
// acquirer knows, so they answer with the lease_id included. Another
// tenant's lease answers 404 exactly like an unknown one.

// getLease serves GET /v1/leases/{lease_id}.
func (h *Handler) getLease(w http.ResponseWriter, r *http.Request, c *call) error {
	l, err := h.engine.Lease(r.Context(), c.principal.Tenant, c.params.get("lease_id"))
	if err != nil {
		return err
	}
	wl := wire.OwnLease(&l)
	writeLease(w, &wl)
	return nil
}

// renew serves POST /v1/leases/{lease_id}/renew with an optional body
// {"ttl_ms": n}; omitted, the lease keeps its own TTL.
func (h *Handler) renew(w http.ResponseWriter, r *http.Request, c *call) error {
	o, err := readObject(w, r, "ttl_ms")
	if err != nil {
		return err
	}
	ms, given, err := o.int("ttl_ms")
	if err != nil {
		return err
	}
	if given && ms == 0 {
		// The engine reads a zero TTL as "the lease's own": refuse it here.
		return dlm.Invalid("ttl_ms", "must be at least %d (omit it to keep the lease's TTL)", dlm.MinTTLMillis)
	}
	l, err := h.engine.Renew(r.Context(), c.principal.Tenant, c.params.get("lease_id"), millis(ms))
	if err != nil {
		return err
	}
	wl := wire.OwnLease(&l)
	writeLease(w, &wl)
	return nil
}

// release serves DELETE /v1/leases/{lease_id}: 200 with the ended lease.
func (h *Handler) release(w http.ResponseWriter, r *http.Request, c *call) error {
	l, err := h.engine.Release(r.Context(), c.principal.Tenant, c.params.get("lease_id"))
	if err != nil {
		return err
	}
	wl := wire.OwnLease(&l)
	writeLease(w, &wl)
	return nil
}
