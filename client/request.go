package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"time"

	"github.com/dlmhq/dlm"
)

// request is one API call.
type request struct {
	method string
	path   string // already escaped, e.g. "/v1/locks/a%2Fb/acquire"
	query  url.Values
	body   any    // sent as JSON if not nil
	idem   string // Idempotency-Key header, if set
	// wait is how long the server may hold the request before answering
	// (a blocking acquire); it extends the attempt timeout.
	wait time.Duration
	// once disables retries: the caller runs its own.
	once bool
	// doneOnRetry reports whether err, answered to a retry, shows that an
	// earlier attempt had taken effect (a release answered lease_ended
	// "released"). The call then succeeds with no result.
	doneOnRetry func(err error) bool
}

// do sends r, retrying transient failures (see transient) with backoff for
// up to the client's RetryTimeout after the first failure, and decodes a 2xx
// JSON answer into out. Retries resend the same body and Idempotency-Key.
func (c *Client) do(ctx context.Context, r request, out any) error {
	var giveUp time.Time
	var last error // the last failure not caused by ctx ending
	for attempt := 0; ; attempt++ {
		err := c.send(ctx, r, out)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctxErr(ctx, last)
		}
		if attempt > 0 && r.doneOnRetry != nil && r.doneOnRetry(err) {
			return nil
		}
		if r.once || !transient(err) {
			return err
		}
		if last == nil {
			giveUp = time.Now().Add(c.retryTimeout)
		}
		last = err
		d := backoff(attempt, 50*time.Millisecond, 2*time.Second)
		if time.Now().Add(d).After(giveUp) {
			return err
		}
		if sleep(ctx, d) != nil {
			return ctxErr(ctx, last)
		}
	}
}

// send makes one attempt at r.
func (c *Client) send(ctx context.Context, r request, out any) error {
	actx, cancel := context.WithTimeout(ctx, c.requestTimeout+r.wait)
	defer cancel()
	var body io.Reader
	if r.body != nil {
		b, err := json.Marshal(r.body)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	u := c.base.String() + r.path
	if len(r.query) > 0 {
		u += "?" + r.query.Encode()
	}
	req, err := http.NewRequestWithContext(actx, r.method, u, body)
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	if r.body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if r.idem != "" {
		// The header also tells net/http that a POST may be resent on a
		// connection that closed before it was written.
		req.Header.Set("Idempotency-Key", r.idem)
	}
	req.Header.Set("Authorization", "Bearer "+c.key)
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return err
		}
		var cert *tls.CertificateVerificationError
		if errors.As(err, &cert) {
			return err
		}
		return &netError{err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		if ctx.Err() != nil {
			return err
		}
		return &netError{fmt.Errorf("read response: %w", err)}
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return decodeError(resp.StatusCode, b)
	}
	if out == nil || resp.StatusCode == http.StatusNoContent {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return &dlm.Error{Code: dlm.CodeInternal, Message: fmt.Sprintf("decode response: %v", err)}
	}
	return nil
}

// backoff returns how long to wait before retry attempt+1: exponential from
// base, capped at max, with jitter over its upper half so that many clients
// retrying after one outage spread out.
func backoff(attempt int, base, max time.Duration) time.Duration {
	d := base
	for i := 0; i < attempt && d < max; i++ {
		d *= 2
	}
	d = min(d, max)
	return d/2 + rand.N(d/2+1)
}

// sleep waits for d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// lockPath returns the escaped path of a lock, plus suffix.
func lockPath(name, suffix string) string { return "/v1/locks/" + url.PathEscape(name) + suffix }

// leasePath returns the escaped path of a lease, plus suffix.
func leasePath(id, suffix string) string { return "/v1/leases/" + url.PathEscape(id) + suffix }
