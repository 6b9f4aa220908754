package engine

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"strings"
	"time"

	"github.com/dlmhq/dlm"
)

// Principal is who an API key belongs to.
type Principal struct {
	Tenant string // "" for the admin
	Admin  bool
	KeyID  string // the key's ID, for KeyContext
}

// Credentials are the keys made on first start, to be shown once.
type Credentials struct {
	AdminKey    string `json:"admin_key"`
	Tenant      string `json:"tenant"`
	TenantKey   string `json:"tenant_key"`
	TenantKeyID string `json:"tenant_key_id"`
}

// DefaultTenant is the tenant made on first start.
const DefaultTenant = "default"

// adminKeyID is the ID of the one admin key. A key given in DLM_ADMIN_KEY may
// have any form, so its ID cannot be read from it; generated keys have the
// form dlm_<id>_<secret>.
const adminKeyID = "admin"

// MinAdminKeyLen is the shortest admin key accepted from the environment.
const MinAdminKeyLen = 16

// newKey makes an API key "dlm_<id>_<secret>" with 128 random bits of secret.
func newKey(id string) string { return "dlm_" + id + "_" + rand.Text() }

func hashKey(key string) []byte {
	h := sha256.Sum256([]byte(key))
	return h[:]
}

// keyID reads the ID out of a generated key, or returns the admin key's ID
// for a key of any other form.
func keyID(key string) string {
	if rest, ok := strings.CutPrefix(key, "dlm_"); ok {
		if id, _, ok := strings.Cut(rest, "_"); ok && id != "" {
			return id
		}
	}
	return adminKeyID
}

// Authenticate returns who apiKey belongs to. Keys are stored hashed and
// compared in constant time; keys that passed are remembered (by hash) so
// that most requests cost no read. Errors: unauthenticated.
func (e *Engine) Authenticate(ctx context.Context, apiKey string) (p Principal, err error) {
	if apiKey == "" {
		return p, dlm.Errorf(dlm.CodeUnauthenticated, "missing API key: send Authorization: Bearer <key>")
	}
	hash := hashKey(apiKey)
	if p, ok := e.keys.get(hash, e.shared); ok {
		return p, nil
	}
	var id string // of the key that matched
	ok := false
	err = e.store.View(ctx, func(tx dlm.ReadTx) error {
		ids := []string{keyID(apiKey)}
		if ids[0] != adminKeyID {
			ids = append(ids, adminKeyID) // a DLM_ADMIN_KEY that looks generated
		}
		for _, candidate := range ids {
			k, found, err := tx.APIKey(ctx, candidate)
			if err != nil {
				return err
			}
			if found && !k.Revoked && subtle.ConstantTimeCompare(k.Hash, hash) == 1 {
				p, ok, id = Principal{Tenant: k.Tenant, Admin: k.Tenant == "", KeyID: k.ID}, true, k.ID
				return nil
			}
		}
		return nil
	})
	if err == nil && !ok {
		err = dlm.Errorf(dlm.CodeUnauthenticated, "unknown or revoked API key")
	}
	if ok {
		e.keys.put(hash, id, p)
	}
	return p, err
}

// Bootstrap makes the admin key and the default tenant with a key, once per
// store. adminKey, if not empty, becomes the admin key instead of a generated
// one. It returns nil credentials if the store was set up before.
func (e *Engine) Bootstrap(ctx context.Context, adminKey string) (creds *Credentials, err error) {
	if adminKey != "" && len(adminKey) < MinAdminKeyLen {
		return nil, dlm.Invalid("DLM_ADMIN_KEY", "must be at least %d characters", MinAdminKeyLen)
	}
	if found, err := e.hasAdminKey(ctx); err != nil || found {
		return nil, err
	}
	c := &Credentials{AdminKey: adminKey, Tenant: DefaultTenant}
	if c.AdminKey == "" {
		c.AdminKey = newKey(adminKeyID)
	}
	// The default tenant and its key first, the admin key last: a
	// bootstrap cut short is done again at the next start, and two
	// processes bootstrapping one new database at once agree on the
	// admin key, since only one can store it.
	now := e.now()
	var first dlm.APIKey
	first, c.TenantKeyID, c.TenantKey = newAPIKey(DefaultTenant, now)
	err = e.store.CreateTenant(ctx, dlm.Tenant{Name: DefaultTenant, CreatedAt: now}, first)
	if dlm.ErrorCode(err) == dlm.CodeInvalidArgument {
		err = e.store.PutAPIKey(ctx, first) // a start cut short made the tenant
	}
	if err != nil {
		return nil, err
	}
	err = e.store.PutAPIKey(ctx, dlm.APIKey{ID: adminKeyID, Hash: hashKey(c.AdminKey), CreatedAt: now})
	if err != nil {
		if found, ferr := e.hasAdminKey(ctx); ferr == nil && found {
			return nil, nil // another process bootstrapped first
		}
		return nil, err
	}
	return c, nil
}

func (e *Engine) hasAdminKey(ctx context.Context) (found bool, err error) {
	err = e.store.View(ctx, func(tx dlm.ReadTx) error {
		_, found, err = tx.APIKey(ctx, adminKeyID)
		return err
	})
	return found, err
}

// newAPIKey makes a key of tenant: what the store keeps, and the ID and
// secret the caller is shown once.
func newAPIKey(tenant string, now time.Time) (k dlm.APIKey, id, key string) {
	id = strings.ToLower(rand.Text()[:12])
	key = newKey(id)
	return dlm.APIKey{ID: id, Tenant: tenant, Hash: hashKey(key), CreatedAt: now}, id, key
}

// CreateTenant adds a tenant and its first API key, shown only now.
// Errors: invalid_argument (bad or taken name).
func (e *Engine) CreateTenant(ctx context.Context, name string) (t dlm.Tenant, keyID, key string, err error) {
	if err := dlm.ValidateTenantName(name); err != nil {
		return t, "", "", err
	}
	t = dlm.Tenant{Name: name, CreatedAt: e.now()}
	var first dlm.APIKey
	first, keyID, key = newAPIKey(name, t.CreatedAt)
	if err := e.store.CreateTenant(ctx, t, first); err != nil {
		return dlm.Tenant{}, "", "", err
	}
	return t, keyID, key, nil
}

// Tenants lists every tenant by name.
func (e *Engine) Tenants(ctx context.Context) (ts []dlm.Tenant, err error) {
	err = e.store.View(ctx, func(tx dlm.ReadTx) error {
		ts, err = tx.Tenants(ctx)
		return err
	})
	if ts == nil {
		ts = []dlm.Tenant{}
	}
	return ts, err
}

// Tenant returns one tenant. Errors: not_found.
func (e *Engine) Tenant(ctx context.Context, name string) (t dlm.Tenant, err error) {
	err = e.store.View(ctx, func(tx dlm.ReadTx) error {
		var ok bool
		t, ok, err = tx.Tenant(ctx, name)
		if err == nil && !ok {
			err = dlm.Errorf(dlm.CodeNotFound, "no tenant %q", name)
		}
		return err
	})
	return t, err
}

// CreateKey adds an API key to tenant, shown only now. Errors: not_found.
func (e *Engine) CreateKey(ctx context.Context, tenant string) (keyID, key string, err error) {
	// The store refuses a key of an unknown tenant too, but takes tenant ""
	// for the admin's: only a real tenant may get a key here.
	if _, err := e.Tenant(ctx, tenant); err != nil {
		return "", "", err
	}
	var k dlm.APIKey
	k, keyID, key = newAPIKey(tenant, e.now())
	if err := e.store.PutAPIKey(ctx, k); err != nil {
		return "", "", err
	}
	return keyID, key, nil
}

// RevokeKey refuses tenant's key keyID from now on, and ends what it holds
// open here: its watches and queued acquires (see KeyContext). Other
// processes on a shared store follow within KeyCacheTTL. Errors: not_found.
func (e *Engine) RevokeKey(ctx context.Context, tenant, keyID string) error {
	ok, err := e.store.RevokeAPIKey(ctx, tenant, keyID)
	if err == nil && !ok {
		err = dlm.Errorf(dlm.CodeNotFound, "tenant %q has no key %q", tenant, keyID)
	}
	if err == nil {
		e.keys.forget(keyID)
		e.holds.revoke(keyID, true)
	}
	return err
}
