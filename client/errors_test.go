package client

import (
	"errors"
	"testing"

	"github.com/dlmhq/dlm"
)

func TestDecodeError(t *testing.T) {
	tests := []struct {
		name   string
		status int
		body   string
		is     error
		check  func(t *testing.T, e *dlm.Error)
	}{
		{
			name:   "conflict with holders",
			status: 409,
			body: `{"error":{"code":"lock_conflict","message":"held","details":{"holders":[
				{"name":"a","scope":"global","mode":"shared","holder_id":"w1","fencing_token":7,"ttl_ms":1000,
				 "acquired_at":"2026-11-26T10:00:00.123456789Z","expires_at":"2026-11-26T10:00:01.123456789Z"}]}}}`,
			is: dlm.ErrLockConflict,
			check: func(t *testing.T, e *dlm.Error) {
				if len(e.Holders) != 1 {
					t.Fatalf("holders = %v", e.Holders)
				}
				h := e.Holders[0]
				if h.HolderID != "w1" || h.Token != 7 || h.Mode != dlm.Shared || !h.Key.Global() || h.Key.Name != "a" {
					t.Errorf("holder = %+v", h)
				}
			},
		},
		{
			name:   "lease ended with reason",
			status: 410,
			body:   `{"error":{"code":"lease_ended","message":"gone","details":{"reason":"force_released"}}}`,
			is:     dlm.ErrLeaseEnded,
			check: func(t *testing.T, e *dlm.Error) {
				if e.Reason != dlm.ForceReleased {
					t.Errorf("reason = %v", e.Reason)
				}
			},
		},
		{
			name:   "wait timeout",
			status: 409,
			body:   `{"error":{"code":"wait_timeout","message":"waited"}}`,
			is:     dlm.ErrWaitTimeout,
		},
		{
			name:   "invalid argument names the field",
			status: 400,
			body:   `{"error":{"code":"invalid_argument","message":"ttl_ms: too small","details":{"field":"ttl_ms"}}}`,
			check: func(t *testing.T, e *dlm.Error) {
				if e.Code != dlm.CodeInvalidArgument || e.Field != "ttl_ms" {
					t.Errorf("got %+v", e)
				}
			},
		},
		{name: "unauthenticated", status: 401, body: `{"error":{"code":"unauthenticated","message":"bad key"}}`, is: dlm.ErrUnauthenticated},
		{name: "proxy 502 without a dlm body", status: 502, body: "<html>bad gateway</html>", is: dlm.ErrUnavailable},
		{name: "unknown status", status: 418, body: "teapot", check: func(t *testing.T, e *dlm.Error) {
			if e.Code != dlm.CodeInternal {
				t.Errorf("code = %q, want internal", e.Code)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := decodeError(tt.status, []byte(tt.body))
			err := opError("acquire", "a", e) // as callers see it: wrapped
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("errors.Is(%v, %v) = false", err, tt.is)
			}
			var got *dlm.Error
			if !errors.As(err, &got) {
				t.Fatalf("errors.As(%v, *dlm.Error) = false", err)
			}
			if tt.check != nil {
				tt.check(t, got)
			}
		})
	}
}

func TestTransient(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want bool
	}{
		{&netError{errors.New("connection refused")}, true},
		{opError("acquire", "a", decodeError(503, []byte(`{"error":{"code":"unavailable","message":"down"}}`))), true},
		{decodeError(504, nil), true},
		{decodeError(409, []byte(`{"error":{"code":"lock_conflict","message":"held"}}`)), false},
		{decodeError(401, nil), false},
		{errors.New("other"), false},
	} {
		if got := transient(tt.err); got != tt.want {
			t.Errorf("transient(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}
