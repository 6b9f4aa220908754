package dlmhttp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/engine"
	"github.com/dlmhq/dlm/wire"
)

// acquireManyFields are the fields of a multi-lock acquire body, and
// lockRefFields those of each of its locks.
var (
	acquireManyFields = []string{"locks", "holder_id", "ttl_ms", "wait_ms", "idempotency_key", "lock_delay_ms", "max_hold_ms"}
	lockRefFields     = []string{"name", "mode", "scope", "limit"}
)

// acquireManyBody decodes a multi-lock acquire body o, but for the
// idempotency key, for tenant. A lock's fields are named in errors by
// their place, as locks[1].mode.
func acquireManyBody(o object, tenant string) (engine.AcquireManyRequest, error) {
	var req engine.AcquireManyRequest
	var raws []json.RawMessage
	if given, err := o.field("locks", &raws, "a list of locks"); err != nil {
		return req, err
	} else if !given || len(raws) < 2 || len(raws) > engine.MaxLocks {
		return req, dlm.Invalid("locks", "must name between 2 and %d locks", engine.MaxLocks)
	}
	t, err := leaseBody(o)
	if err != nil {
		return req, err
	}
	req = engine.AcquireManyRequest{
		Tenant: tenant, Locks: make([]engine.LockSpec, len(raws)), HolderID: t.holder,
		TTL: t.ttl, Wait: t.wait, LockDelay: t.lockDelay, MaxHold: t.maxHold,
	}
	for i, raw := range raws {
		if req.Locks[i], err = lockRef(raw, tenant); err != nil {
			var de *dlm.Error
			if errors.As(err, &de) && de.Code == dlm.CodeInvalidArgument {
				field := fmt.Sprintf("locks[%d].%s", i, de.Field)
				if de.Field == "body" {
					field = fmt.Sprintf("locks[%d]", i)
				}
				de.Message = field + ": " + strings.TrimPrefix(de.Message, de.Field+": ")
				de.Field = field
			}
			return req, err
		}
	}
	return req, nil
}

// lockRef decodes one lock of a multi-lock acquire.
func lockRef(raw json.RawMessage, tenant string) (engine.LockSpec, error) {
	o, err := decodeObject(raw, lockRefFields...)
	if err != nil {
		return engine.LockSpec{}, err
	}
	name, given, err := o.string("name")
	if err != nil {
		return engine.LockSpec{}, err
	} else if !given {
		return engine.LockSpec{}, dlm.Invalid("name", "is required")
	}
	if err := dlm.ValidateName(name); err != nil {
		return engine.LockSpec{}, err
	}
	return lockSpec(o, tenant, name)
}

// ownLeases shows the leases of a multi-lock acquire to their acquirer.
func ownLeases(ls []dlm.Lease, replayed bool) wire.Leases {
	out := wire.Leases{Leases: make([]wire.Lease, len(ls)), Replayed: replayed}
	for i := range ls {
		out.Leases[i] = wire.OwnLease(&ls[i])
	}
	return out
}

// acquireMany serves POST /v1/acquire: several locks, all or nothing, try
// once or queued on all of them at once up to wait_ms.
func (h *Handler) acquireMany(w http.ResponseWriter, r *http.Request, c *call) error {
	o, err := readObject(w, r, acquireManyFields...)
	if err != nil {
		return err
	}
	req, err := acquireManyBody(o, c.principal.Tenant)
	if err != nil {
		return err
	}
	if req.IdempotencyKey, err = idempotencyKey(r, o); err != nil {
		return err
	}
	// Revoking the key withdraws the acquire if it is queued.
	ctx, release := h.engine.KeyContext(r.Context(), c.principal.KeyID)
	defer release()
	ls, replayed, err := h.engine.AcquireMany(ctx, req)
	if errors.Is(context.Cause(ctx), engine.ErrKeyRevoked) {
		if err == nil && !replayed {
			// Granted as the key was revoked: nobody may have them.
			for _, l := range ls {
				_, rerr := h.engine.Release(context.WithoutCancel(ctx), req.Tenant, l.ID)
				err = errors.Join(err, rerr)
			}
		}
		return errors.Join(engine.ErrKeyRevoked, err)
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, ownLeases(ls, replayed))
	return nil
}
