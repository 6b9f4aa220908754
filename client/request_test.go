package client

import (
	"context"
	"errors"
	"net/http"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/dlmhq/dlm"
)

func TestRetriesGiveUpAfterRetryTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var attempts atomic.Int32
		c := fakeClient(t, roundTripFunc(func(r *http.Request) (*http.Response, error) {
			attempts.Add(1)
			return nil, syscall.ECONNREFUSED
		}))
		start := time.Now()
		_, err := c.TryAcquire(context.Background(), "a", nil)
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("err = %v, want the network error", err)
		}
		if d := time.Since(start); d > c.retryTimeout || d < c.retryTimeout-3*time.Second {
			t.Errorf("gave up after %v, want about RetryTimeout %v", d, c.retryTimeout)
		}
		if attempts.Load() < 10 {
			t.Errorf("only %d attempts", attempts.Load())
		}
	})
}

func TestNoRetryOnRefusal(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var attempts atomic.Int32
		c := fakeClient(t, roundTripFunc(func(r *http.Request) (*http.Response, error) {
			attempts.Add(1)
			return handlerTransport{http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				fakeError(w, 409, "lock_conflict", "", "held")
			})}.RoundTrip(r)
		}))
		_, err := c.TryAcquire(context.Background(), "a", nil)
		if !errors.Is(err, dlm.ErrLockConflict) || attempts.Load() != 1 {
			t.Errorf("err = %v after %d attempts, want lock_conflict after 1", err, attempts.Load())
		}
	})
}

func TestCtxEndDuringRetriesJoinsLastError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := fakeClient(t, roundTripFunc(func(r *http.Request) (*http.Response, error) {
			return handlerTransport{http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				fakeError(w, 503, "unavailable", "", "shutting down")
			})}.RoundTrip(r)
		}))
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := c.TryAcquire(ctx, "a", nil)
		if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, dlm.ErrUnavailable) {
			t.Errorf("err = %v, want unavailable joined with the deadline", err)
		}
	})
}
