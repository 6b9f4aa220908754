package dlmhttp_test

import (
	"bytes"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dlmhq/dlm/dlmtest"
	"github.com/dlmhq/dlm/dlmtest/testserver"
	dlmhttp "github.com/dlmhq/dlm/http"
)

// burst is the failed authentications the tests allow an address.
const burst = 20

// TestFailedAuthLimit: past the limit of failed authentications, an
// address gets 429 limit_exceeded instead of 401, while a valid key from
// the same address goes on working; every failure is counted, and logged
// at info with the address, rate-limited.
func TestFailedAuthLimit(t *testing.T) {
	var (
		logs   dlmtest.Buffer
		failed atomic.Int64
	)
	// The limit refills so slowly (one per 3 minutes) that a slow run of
	// the test cannot earn an attempt back.
	s := testserver.New(t, &testserver.Options{
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo})),
		Handler: []dlmhttp.Option{
			dlmhttp.WithFailedAuth(func() { failed.Add(1) }),
			dlmhttp.WithFailedAuthLimit(burst, time.Hour),
		},
	})
	bad := &api{t, s.URL, "dlm_nosuch_secret"}
	good := tenantAPI(t, s)

	for i := range burst {
		bad.wantError(401, "unauthenticated", "GET", "/v1/locks", nil)
		if i%5 == 0 { // valid keys in between draw nothing from the allowance
			good.must(200, "GET", "/v1/locks", nil)
		}
	}
	r := bad.wantError(429, "limit_exceeded", "GET", "/v1/locks", nil)
	if secs, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || secs < 1 {
		t.Errorf("Retry-After = %q, want whole seconds ≥ 1", r.header.Get("Retry-After"))
	}
	// No key at all, a malformed header, a watch: all failed attempts.
	(&api{t, s.URL, ""}).wantError(429, "limit_exceeded", "POST", "/v1/locks/a/acquire", map[string]any{"holder_id": "h"})
	bad.wantError(429, "limit_exceeded", "GET", "/v1/watch", nil)

	// The address is over its limit; its valid keys are not.
	for range 3 * burst {
		good.must(200, "GET", "/v1/locks", nil)
	}
	good.acquire("still-mine", "h", nil)
	adminAPI(t, s).must(200, "GET", "/v1/tenants", nil)

	if got, want := failed.Load(), int64(burst+3); got != want {
		t.Errorf("WithFailedAuth called %d times, want %d: once per failed authentication", got, want)
	}
	out := logs.String()
	if n := strings.Count(out, `msg="authentication failed"`); n != 1 {
		t.Errorf("%d failed authentications logged %d lines, want 1 (rate-limited):\n%s", failed.Load(), n, out)
	}
	if !strings.Contains(out, "level=INFO") || !strings.Contains(out, "remote=127.0.0.1:") {
		t.Errorf("the failed authentication is not logged at info with the remote address:\n%s", out)
	}
}

// TestForbiddenIsNotFailedAuth: a valid key used where it may not be (403)
// authenticated fine, and draws nothing from the allowance.
func TestForbiddenIsNotFailedAuth(t *testing.T) {
	var failed atomic.Int64
	s := testserver.New(t, &testserver.Options{Handler: []dlmhttp.Option{
		dlmhttp.WithFailedAuth(func() { failed.Add(1) }),
		dlmhttp.WithFailedAuthLimit(burst, time.Hour),
	}})
	a := tenantAPI(t, s)
	for range 2 * burst {
		a.wantError(403, "permission_denied", "GET", "/v1/tenants", nil)
	}
	if n := failed.Load(); n != 0 {
		t.Errorf("403s counted as %d failed authentications", n)
	}
}

// TestOpenAPIServed: the document is served without a key, as embedded.
func TestOpenAPIServed(t *testing.T) {
	s := testserver.New(t, nil)
	r := (&api{t, s.URL, ""}).do("GET", "/v1/openapi.json", nil)
	if r.status != 200 || r.header.Get("Content-Type") != "application/json" || !bytes.Equal(r.body, dlmhttp.OpenAPI) {
		t.Errorf("GET /v1/openapi.json = %d %q, %d bytes; want 200 application/json, the embedded document", r.status, r.header.Get("Content-Type"), len(r.body))
	}
}

// TestHealthzVersion: /healthz names the build, beside its status.
func TestHealthzVersion(t *testing.T) {
	s := testserver.New(t, nil)
	h := (&api{t, s.URL, ""}).must(200, "GET", "/healthz", nil)
	if h["status"] != "ok" || h["version"] == "" || h["version"] == nil {
		t.Errorf("GET /healthz = %v, want status ok and a version", h)
	}
}
