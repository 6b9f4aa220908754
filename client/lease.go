package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/wire"
)

// Renew extends lease id to now plus ttl (0: the lease's own TTL) and returns
// it with its new expiry; the fencing token does not change. An ended lease is
// never revived: the error then matches dlm.ErrLeaseEnded, with Reason, or
// dlm.ErrNotFound for an unknown id. Transient failures are retried; renewing
// twice is harmless. Most callers let a Lock renew itself instead.
func (c *Client) Renew(ctx context.Context, id string, ttl time.Duration) (*dlm.Lease, error) {
	return c.renew(ctx, id, ttl, false)
}

// renewOnce is Renew without retries, for the keep-alive, which retries on
// its own schedule.
func (c *Client) renewOnce(ctx context.Context, id string, ttl time.Duration) (*dlm.Lease, error) {
	return c.renew(ctx, id, ttl, true)
}

func (c *Client) renew(ctx context.Context, id string, ttl time.Duration, once bool) (*dlm.Lease, error) {
	if id == "" {
		return nil, dlm.Invalid("lease_id", "must not be empty")
	}
	var body struct {
		TTLMs int64 `json:"ttl_ms,omitempty"`
	}
	body.TTLMs = ttl.Milliseconds()
	var w wire.Lease
	var res struct {
		Leases []json.RawMessage `json:"leases"`
	}
	sc, err := c.sessionDo(ctx, sessRequest{Op: "renew", LeaseIDs: []string{id}, TTLMs: body.TTLMs},
		request{method: http.MethodPost, path: leasePath(id, "/renew"), body: body, once: once}, &w, false, &res)
	if err == nil && sc != nil {
		err = renewResult(res.Leases, &w)
	}
	if err != nil {
		return nil, fmt.Errorf("renew lease: %w", err)
	}
	l := leaseOf(&w)
	return &l, nil
}

// Release ends lease id. A retry that finds the lease already released
// (because an earlier attempt went through) succeeds. If the lease had ended
// otherwise the error matches dlm.ErrLeaseEnded, with Reason; an unknown id
// gives dlm.ErrNotFound. On other errors the lease may or may not have been
// released.
func (c *Client) Release(ctx context.Context, id string) error {
	if id == "" {
		return dlm.Invalid("lease_id", "must not be empty")
	}
	_, err := c.sessionDo(ctx, sessRequest{Op: "release", LeaseID: id}, request{
		method: http.MethodDelete, path: leasePath(id, ""),
		doneOnRetry: func(err error) bool {
			var e *dlm.Error
			return errors.As(err, &e) && e.Code == dlm.CodeLeaseEnded && e.Reason == dlm.Released
		},
	}, nil, false)
	if err != nil {
		return fmt.Errorf("release lease: %w", err)
	}
	return nil
}

// Lease returns lease id as the server has it now. An ended lease gives an
// error matching dlm.ErrLeaseEnded, with Reason; an unknown (or another
// tenant's) id gives dlm.ErrNotFound.
func (c *Client) Lease(ctx context.Context, id string) (*dlm.Lease, error) {
	if id == "" {
		return nil, dlm.Invalid("lease_id", "must not be empty")
	}
	var w wire.Lease
	if _, err := c.sessionDo(ctx, sessRequest{Op: "get", LeaseID: id}, request{method: http.MethodGet, path: leasePath(id, "")}, &w, false); err != nil {
		return nil, fmt.Errorf("get lease: %w", err)
	}
	l := leaseOf(&w)
	return &l, nil
}

// renewResult reads the one result of a session renew into w.
func renewResult(results []json.RawMessage, w *wire.Lease) error {
	if len(results) != 1 {
		return &dlm.Error{Code: dlm.CodeInternal, Message: "renew answered the wrong number of leases"}
	}
	var r struct {
		Error json.RawMessage `json:"error"`
	}
	if err := json.Unmarshal(results[0], &r); err != nil {
		return &dlm.Error{Code: dlm.CodeInternal, Message: "decode reply: " + err.Error()}
	}
	if r.Error != nil {
		return decodeError(0, []byte(`{"error":`+string(r.Error)+`}`))
	}
	return json.Unmarshal(results[0], w)
}
