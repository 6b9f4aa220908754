package dlmhttp

import (
	"context"

	"github.com/dlmhq/dlm"
)

// Scopes on the wire.
const (
	scopeTenant = "tenant"
	scopeGlobal = "global"
)

// parseScope checks a scope given on the wire; omitted means tenant.
func parseScope(s string, given bool) (global bool, err error) {
	switch {
	case !given || s == scopeTenant:
		return false, nil
	case s == scopeGlobal:
		return true, nil
	}
	return false, dlm.Invalid("scope", "must be %q or %q", scopeTenant, scopeGlobal)
}

// errForeignTenant refuses a tenant key's ?tenant= naming another tenant.
var errForeignTenant = dlm.Errorf(dlm.CodePermissionDenied, "a tenant key addresses only its own tenant")

// namespace resolves the namespace a call on locks addresses, from its
// ?scope= and ?tenant= parameters and its key.
//
// The global scope is the global namespace for everybody; ?tenant= is then
// ignored (clients may send it regardless of scope). In the tenant scope, a
// tenant key addresses its own tenant (?tenant= may only repeat it: any
// other tenant is 403), and the admin key, which belongs to no tenant, must
// name an existing tenant with ?tenant=NAME (400 without, 404 unknown).
func (h *Handler) namespace(ctx context.Context, c *call) (string, error) {
	s, given := c.query.get("scope")
	global, err := parseScope(s, given)
	if err != nil || global {
		return dlm.GlobalNamespace, err
	}
	t, named := c.query.get("tenant")
	if !c.principal.Admin {
		if named && t != c.principal.Tenant {
			return "", errForeignTenant
		}
		return c.principal.Tenant, nil
	}
	if !named {
		return "", dlm.Invalid("tenant", "the admin key belongs to no tenant: name one with ?tenant=NAME, or use scope=global")
	}
	if err := dlm.ValidateTenantName(t); err != nil {
		return "", dlm.Invalid("tenant", "%q is not a tenant name", t)
	}
	if _, err := h.engine.Tenant(ctx, t); err != nil {
		return "", err
	}
	return t, nil
}
