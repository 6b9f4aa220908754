package dlmhttp

import (
	"net/http"

	"github.com/dlmhq/dlm"
)

// The tenant routes need the admin key (the admin calls of the API). API keys are shown
// only in the answer that creates them.

// createTenant serves POST /v1/tenants {"name"}: 201 with the tenant and its
// first key.
func (h *Handler) createTenant(w http.ResponseWriter, r *http.Request, c *call) error {
	o, err := readObject(w, r, "name")
	if err != nil {
		return err
	}
	name, given, err := o.string("name")
	if err != nil {
		return err
	} else if !given {
		return dlm.Invalid("name", "is required")
	}
	t, keyID, key, err := h.engine.CreateTenant(r.Context(), name)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, wireNewTenant{Tenant: tenant(&t), wireNewKey: wireNewKey{KeyID: keyID, APIKey: key}})
	return nil
}

// listTenants serves GET /v1/tenants.
func (h *Handler) listTenants(w http.ResponseWriter, r *http.Request, c *call) error {
	ts, err := h.engine.Tenants(r.Context())
	if err != nil {
		return err
	}
	out := wireTenantList{Tenants: make([]wireTenant, len(ts))}
	for i := range ts {
		out.Tenants[i] = tenant(&ts[i])
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// createKey serves POST /v1/tenants/{tenant}/keys: 201 with the new key.
func (h *Handler) createKey(w http.ResponseWriter, r *http.Request, c *call) error {
	if _, err := readObject(w, r); err != nil {
		return err
	}
	id, key, err := h.engine.CreateKey(r.Context(), c.params.get("tenant"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, wireNewKey{KeyID: id, APIKey: key})
	return nil
}

// revokeKey serves DELETE /v1/tenants/{tenant}/keys/{key_id}: 204, and the
// key is refused from then on.
func (h *Handler) revokeKey(w http.ResponseWriter, r *http.Request, c *call) error {
	if err := h.engine.RevokeKey(r.Context(), c.params.get("tenant"), c.params.get("key_id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
