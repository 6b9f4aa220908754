package client

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/wire"
)

// The calls in this file need the admin key (the admin calls of the API); with a tenant
// key they fail with a *dlm.Error of code dlm.CodePermissionDenied.

// ForceRelease ends every lease on name in scope of tenant (ignored for
// ScopeGlobal) with reason force_released, and returns the ended leases
// (without IDs). Holders find out when they next renew.
func (c *Client) ForceRelease(ctx context.Context, tenant, name string, scope Scope) ([]dlm.Lease, error) {
	if err := dlm.ValidateName(name); err != nil {
		return nil, err
	}
	s, err := scope.wire()
	if err != nil {
		return nil, err
	}
	q := url.Values{"scope": {s}}
	if tenant != "" {
		q.Set("tenant", tenant)
	}
	var w struct {
		Ended []wire.Lease `json:"ended"`
	}
	if err := c.do(ctx, request{method: http.MethodPost, path: lockPath(name, "/force-release"), query: q}, &w); err != nil {
		return nil, opError("force-release", name, err)
	}
	return leases(w.Ended), nil
}

// Tenant is a tenant as the admin API shows it.
type Tenant struct {
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"created_at"`
}

// NewKey is a freshly created API key. The secret is shown only once.
type NewKey struct {
	KeyID  string `json:"key_id"`
	APIKey string `json:"api_key"`
}

// CreateTenant creates tenant name with a first API key. A taken name fails
// with invalid_argument. It is not retried after a network error, which
// could otherwise report a name it just took as taken.
func (c *Client) CreateTenant(ctx context.Context, name string) (*Tenant, *NewKey, error) {
	if err := dlm.ValidateTenantName(name); err != nil {
		return nil, nil, err
	}
	var w struct {
		Tenant Tenant `json:"tenant"`
		NewKey
	}
	body := map[string]string{"name": name}
	if err := c.do(ctx, request{method: http.MethodPost, path: "/v1/tenants", body: body, once: true}, &w); err != nil {
		return nil, nil, fmt.Errorf("create tenant %q: %w", name, err)
	}
	return &w.Tenant, &w.NewKey, nil
}

// Tenants lists every tenant by name.
func (c *Client) Tenants(ctx context.Context) ([]Tenant, error) {
	var w struct {
		Tenants []Tenant `json:"tenants"`
	}
	if err := c.do(ctx, request{method: http.MethodGet, path: "/v1/tenants"}, &w); err != nil {
		return nil, fmt.Errorf("list tenants: %w", err)
	}
	return w.Tenants, nil
}

// CreateKey adds an API key to tenant. It is not retried after a network
// error, which could otherwise create two keys.
func (c *Client) CreateKey(ctx context.Context, tenant string) (*NewKey, error) {
	var k NewKey
	if err := c.do(ctx, request{method: http.MethodPost, path: "/v1/tenants/" + url.PathEscape(tenant) + "/keys", once: true}, &k); err != nil {
		return nil, fmt.Errorf("create key for %q: %w", tenant, err)
	}
	return &k, nil
}

// RevokeKey revokes key keyID of tenant: requests with it are refused (401)
// from then on. An unknown key gives dlm.ErrNotFound.
func (c *Client) RevokeKey(ctx context.Context, tenant, keyID string) error {
	p := "/v1/tenants/" + url.PathEscape(tenant) + "/keys/" + url.PathEscape(keyID)
	if err := c.do(ctx, request{method: http.MethodDelete, path: p}, nil); err != nil {
		return fmt.Errorf("revoke key %q of %q: %w", keyID, tenant, err)
	}
	return nil
}
