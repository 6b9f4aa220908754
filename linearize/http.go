package linearize

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/wire"
)

// HTTPTarget performs operations over the JSON API (README, http/openapi.json) with a plain
// net/http client of its own, so that what is recorded is exactly what went
// over the wire: no retries, no keep-alive logic, no SDK in between.
type HTTPTarget struct {
	// URL returns the server's base URL ("http://127.0.0.1:7070") for each
	// request, so that a test can move it (a restart, a proxy, another
	// instance).
	URL func() string
	// Key is the tenant's API key; AdminKey is used for ForceRelease and
	// Tenant names the tenant for it.
	Key, AdminKey, Tenant string
	// Client defaults to a client with no overall timeout: each request
	// gets its own deadline (Timeout plus the acquire's wait).
	Client *http.Client
	// Timeout bounds a request beyond any wait. Default 10s.
	Timeout time.Duration
}

var _ Target = (*HTTPTarget)(nil)

type wireError struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
		Details struct {
			Reason string `json:"reason"`
			Name   string `json:"name"`
		} `json:"details"`
	} `json:"error"`
}

// Do implements Target.
func (h *HTTPTarget) Do(ctx context.Context, in Input) Output {
	timeout := h.Timeout
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout+in.Wait)
	defer cancel()
	name := url.PathEscape(in.Name)
	switch in.Kind {
	case AcquireTry, AcquireWait:
		body := map[string]any{"holder_id": in.Holder, "mode": in.Mode.String(), "ttl_ms": in.TTL.Milliseconds()}
		if in.Wait > 0 {
			body["wait_ms"] = in.Wait.Milliseconds()
		}
		if in.IdemKey != "" {
			body["idempotency_key"] = in.IdemKey
		}
		if in.Limit > 0 {
			body["limit"] = in.Limit
		}
		return h.lease(ctx, "POST", "/v1/locks/"+name+"/acquire", h.Key, body)
	case AcquireManyTry, AcquireManyWait:
		var res wire.Leases
		out := h.call(ctx, "POST", "/v1/acquire", h.Key, manyBody(in), &res)
		if out.Unknown || out.Code != "" {
			return out
		}
		return manyOutput(out, res)
	case Renew:
		return h.lease(ctx, "POST", "/v1/leases/"+url.PathEscape(in.LeaseID)+"/renew", h.Key, map[string]any{})
	case Release:
		return h.lease(ctx, "DELETE", "/v1/leases/"+url.PathEscape(in.LeaseID), h.Key, nil)
	case Inspect:
		var lock struct {
			FencingToken int64        `json:"fencing_token"`
			Holders      []wire.Lease `json:"holders"`
		}
		out := h.call(ctx, "GET", "/v1/locks/"+name, h.Key, nil, &lock)
		if out.Unknown || out.Code != "" {
			return out
		}
		out.LastToken = lock.FencingToken
		out.Holders = holdersOf(lock.Holders)
		return out
	case ForceRelease:
		var res struct {
			Ended []wire.Lease `json:"ended"`
		}
		out := h.call(ctx, "POST", "/v1/locks/"+name+"/force-release?tenant="+url.QueryEscape(h.Tenant), h.AdminKey, map[string]any{}, &res)
		if out.Unknown || out.Code != "" {
			return out
		}
		out.Holders = holdersOf(res.Ended)
		return out
	}
	panic(fmt.Sprintf("linearize: unknown operation %v", in.Kind))
}

// manyBody is the body of a multi-lock acquire, on HTTP and the session.
func manyBody(in Input) wire.AcquireManyBody {
	ttl, wait := in.TTL.Milliseconds(), in.Wait.Milliseconds()
	b := wire.AcquireManyBody{HolderID: in.Holder, TTLMs: &ttl, WaitMs: &wait, IdempotencyKey: in.IdemKey}
	for _, l := range in.Locks {
		b.Locks = append(b.Locks, wire.LockRef{Name: l.Name, Mode: l.Mode.String(), Limit: l.Limit})
	}
	return b
}

// manyOutput is out with the leases of a multi-lock grant.
func manyOutput(out Output, res wire.Leases) Output {
	out.Replayed = res.Replayed
	for _, l := range res.Leases {
		if l.LeaseID == "" || l.FencingToken == 0 {
			return Output{Unknown: true, Err: "answer without lease_id or fencing_token"}
		}
		out.Leases = append(out.Leases, Granted{Lease: l.LeaseID, Token: l.FencingToken})
	}
	return out
}

func holdersOf(ls []wire.Lease) []Holder {
	var hs []Holder
	for _, l := range ls {
		m, _ := dlm.ParseMode(l.Mode)
		hs = append(hs, Holder{Token: l.FencingToken, Mode: m, Holder: l.HolderID, Expires: l.ExpiresAt})
	}
	return hs
}

func (h *HTTPTarget) lease(ctx context.Context, method, path, key string, body any) Output {
	var l wire.Lease
	out := h.call(ctx, method, path, key, body, &l)
	if out.Unknown || out.Code != "" {
		return out
	}
	out.Lease, out.Token, out.Replayed = l.LeaseID, l.FencingToken, l.Replayed
	out.AcquiredAt, out.ExpiresAt = l.AcquiredAt, l.ExpiresAt
	if out.Lease == "" || out.Token == 0 {
		return Output{Unknown: true, Err: "answer without lease_id or fencing_token"}
	}
	return out
}

// call sends one request. 2xx decodes into res; 4xx is a definite error
// answer; anything else (no answer, 5xx, an undecodable body) is an unknown
// outcome.
func (h *HTTPTarget) call(ctx context.Context, method, path, key string, body, res any) Output {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			panic(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(h.URL(), "/")+path, rd)
	if err != nil {
		return Output{Unknown: true, Err: err.Error()}
	}
	req.Header.Set("Authorization", "Bearer "+key)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	c := h.Client
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		var op *net.OpError
		notSent := errors.As(err, &op) && op.Op == "dial"
		return Output{Unknown: true, Err: shortErr(err), NotSent: notSent}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return Output{Unknown: true, Err: shortErr(err)}
	}
	st := resp.StatusCode
	switch {
	case st >= 200 && st < 300:
		if err := json.Unmarshal(b, res); err != nil {
			return Output{Unknown: true, Status: st, Err: "decoding the answer: " + err.Error()}
		}
		return Output{Status: st}
	case st >= 400 && st < 500:
		var we wireError
		if err := json.Unmarshal(b, &we); err != nil || we.Error.Code == "" {
			return Output{Code: fmt.Sprintf("http_%d", st), Status: st}
		}
		return Output{Code: we.Error.Code, Reason: we.Error.Details.Reason, Blocker: we.Error.Details.Name, Status: st}
	}
	return Output{Unknown: true, Status: st, Err: fmt.Sprintf("%s: %s", resp.Status, bytes.TrimSpace(b))}
}

// shortErr keeps a transport error readable in reports.
func shortErr(err error) string {
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 && len(s) > 80 {
		return s[i+2:]
	}
	return s
}
