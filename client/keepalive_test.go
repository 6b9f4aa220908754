package client

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/dlmhq/dlm"
)

// The tests in this file run in testing/synctest bubbles against fakeServer:
// time is simulated, so they pin the keep-alive's schedule exactly. Any
// goroutine left running at the end of a bubble fails the test, which is the
// leak check.

const fakeTTL = 3 * time.Second // renewal every 1s, lost 300ms before expiry

func fakeClient(t testing.TB, rt http.RoundTripper) *Client {
	t.Helper()
	c, err := New("http://dlm.test", "key", &Options{HTTPClient: &http.Client{Transport: rt}, HolderID: "tester"})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// outage makes a transport fail like an unreachable server while it is on.
type outage struct {
	next http.RoundTripper
	on   atomic.Bool
}

func (o *outage) RoundTrip(r *http.Request) (*http.Response, error) {
	if o.on.Load() {
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	}
	return o.next.RoundTrip(r)
}

func mustTryAcquire(t testing.TB, c *Client, opts *AcquireOptions) *Lock {
	t.Helper()
	l, err := c.TryAcquire(context.Background(), "jobs/a", opts)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func held(l *Lock) bool {
	select {
	case <-l.Lost():
		return false
	default:
		return l.Context().Err() == nil
	}
}

func TestKeepAliveHoldsLeaseAndReleaseStopsIt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeServer()
		l := mustTryAcquire(t, fakeClient(t, handlerTransport{f}), &AcquireOptions{TTL: fakeTTL})
		time.Sleep(10*fakeTTL - time.Millisecond)
		synctest.Wait()
		if !held(l) {
			t.Fatalf("lock lost after %v: %v", 10*fakeTTL, l.Err())
		}
		if got, want := f.renewCount(), 29; got != want {
			t.Errorf("renewals in 10 TTLs = %d, want %d (one every TTL/3)", got, want)
		}
		if err := l.Release(context.Background()); err != nil {
			t.Fatal(err)
		}
		if got := context.Cause(l.Context()); !errors.Is(got, ErrReleased) {
			t.Errorf("cause after Release = %v, want ErrReleased", got)
		}
		time.Sleep(10 * fakeTTL)
		if got := f.renewCount(); got != 29 {
			t.Errorf("renewals went on after Release: %d", got)
		}
		if l.Err() != nil {
			t.Errorf("Err after Release = %v, want nil", l.Err())
		}
		select {
		case <-l.Lost():
			t.Error("Lost closed by a successful Release")
		default:
		}
	})
}

func TestKeepAliveDeclaresLossBeforeExpiryWhenServerUnreachable(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		o := &outage{next: handlerTransport{newFakeServer()}}
		start := time.Now()
		l := mustTryAcquire(t, fakeClient(t, o), &AcquireOptions{TTL: fakeTTL})
		o.on.Store(true)
		lostAt := start.Add(fakeTTL - margin(fakeTTL))
		time.Sleep(time.Until(lostAt) - time.Millisecond)
		synctest.Wait()
		if !held(l) {
			t.Fatalf("lost %v early: %v", time.Until(lostAt), l.Err())
		}
		<-l.Lost()
		if now := time.Now(); !now.Equal(lostAt) {
			t.Errorf("lost at +%v, want +%v (expiry less margin)", now.Sub(start), lostAt.Sub(start))
		}
		err := l.Err()
		if !errors.Is(err, ErrLockLost) || !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("Err = %v, want ErrLockLost with the last renewal error", err)
		}
		if got := context.Cause(l.Context()); got != err {
			t.Errorf("context cause = %v, want Err()", got)
		}
		o.on.Store(false)
		if err := l.Release(context.Background()); err != nil {
			t.Errorf("Release after loss = %v; the lease was still there to release", err)
		}
	})
}

func TestKeepAliveRidesOutTransientErrors(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeServer()
		var failures atomic.Int32
		rt := roundTripFunc(func(r *http.Request) (*http.Response, error) {
			// Every renewal's first two attempts fail, the first with a
			// 503 and the second with a reset connection.
			if strings.HasSuffix(r.URL.Path, "/renew") {
				switch failures.Add(1) % 3 {
				case 1:
					return handlerTransport{http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
						fakeError(w, 503, "unavailable", "", "storage down")
					})}.RoundTrip(r)
				case 2:
					return nil, syscall.ECONNRESET
				}
			}
			return handlerTransport{f}.RoundTrip(r)
		})
		l := mustTryAcquire(t, fakeClient(t, rt), &AcquireOptions{TTL: fakeTTL})
		time.Sleep(10 * fakeTTL)
		synctest.Wait()
		if !held(l) {
			t.Fatalf("lock lost: %v", l.Err())
		}
		if f.renewCount() < 9 {
			t.Errorf("only %d renewals got through in 10 TTLs", f.renewCount())
		}
		if err := l.Release(context.Background()); err != nil {
			t.Fatal(err)
		}
	})
}

func TestKeepAliveReportsForceReleaseAtNextRenewal(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeServer()
		l := mustTryAcquire(t, fakeClient(t, handlerTransport{f}), &AcquireOptions{TTL: fakeTTL})
		time.Sleep(fakeTTL / 2)
		f.forceRelease()
		forcedAt := time.Now()
		<-l.Lost()
		if d := time.Since(forcedAt); d > fakeTTL/3 {
			t.Errorf("loss noticed %v after the force-release, want within one renewal period %v", d, fakeTTL/3)
		}
		var e *dlm.Error
		if err := l.Err(); !errors.Is(err, ErrLockLost) || !errors.As(err, &e) || e.Reason != dlm.ForceReleased {
			t.Errorf("Err = %v, want ErrLockLost with lease_ended force_released", err)
		}
		err := l.Release(context.Background())
		if !errors.Is(err, dlm.ErrLeaseEnded) {
			t.Errorf("Release after force-release = %v, want lease_ended", err)
		}
	})
}

func TestNoKeepAliveLockEndsAtExpiryUnlessRenewed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeServer()
		start := time.Now()
		l := mustTryAcquire(t, fakeClient(t, handlerTransport{f}), &AcquireOptions{TTL: fakeTTL, NoKeepAlive: true})
		time.Sleep(fakeTTL / 2)
		if err := l.Renew(context.Background()); err != nil {
			t.Fatal(err)
		}
		if got, want := l.ExpiresAt(), start.Add(fakeTTL/2+fakeTTL); !got.Equal(want) {
			t.Errorf("ExpiresAt after Renew = +%v, want +%v", got.Sub(start), want.Sub(start))
		}
		<-l.Lost()
		if got, want := time.Since(start), fakeTTL/2+fakeTTL-margin(fakeTTL); got != want {
			t.Errorf("lost at +%v, want +%v", got, want)
		}
		if f.renewCount() != 1 {
			t.Errorf("renewals = %d, want only the manual one", f.renewCount())
		}
	})
}

func TestAcquireAfterLongWaitConfirmsLease(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeServer()
		rt := roundTripFunc(func(r *http.Request) (*http.Response, error) {
			if strings.HasSuffix(r.URL.Path, "/acquire") {
				time.Sleep(2 * fakeTTL) // queued behind another holder
			}
			return handlerTransport{f}.RoundTrip(r)
		})
		l, err := fakeClient(t, rt).Acquire(context.Background(), "jobs/a", &AcquireOptions{TTL: fakeTTL})
		if err != nil {
			t.Fatal(err)
		}
		// Granted after a wait longer than the TTL: the send time proves
		// nothing, so Acquire renewed before returning.
		if f.renewCount() != 1 {
			t.Errorf("renewals = %d, want 1", f.renewCount())
		}
		if got, want := time.Until(l.ExpiresAt()), fakeTTL; got != want {
			t.Errorf("ExpiresAt = now+%v, want now+%v", got, want)
		}
		if err := l.Release(context.Background()); err != nil {
			t.Fatal(err)
		}
	})
}

// dropResponse lets the first request matching suffix reach the server, then
// loses the response as a reset connection would.
func dropResponse(next http.RoundTripper, suffix string) http.RoundTripper {
	var dropped atomic.Bool
	return roundTripFunc(func(r *http.Request) (*http.Response, error) {
		resp, err := next.RoundTrip(r)
		if err == nil && strings.HasSuffix(r.URL.Path, suffix) && dropped.CompareAndSwap(false, true) {
			resp.Body.Close()
			return nil, syscall.ECONNRESET
		}
		return resp, err
	})
}

func TestTryAcquireRetryAfterDroppedResponseGetsSameLease(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeServer()
		l := mustTryAcquire(t, fakeClient(t, dropResponse(handlerTransport{f}, "/acquire")), &AcquireOptions{TTL: fakeTTL})
		if len(f.leases) != 1 || f.token != 1 {
			t.Fatalf("server granted %d leases, last token %d; want one", len(f.leases), f.token)
		}
		if _, ok := f.leases[l.LeaseID()]; !ok || l.Token() != 1 {
			t.Errorf("got lease %s token %d, want the one the server granted", l.LeaseID(), l.Token())
		}
		if err := l.Release(context.Background()); err != nil {
			t.Fatal(err)
		}
	})
}

func TestReleaseRetryAfterDroppedResponseSucceeds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeServer()
		drop := dropResponse(handlerTransport{f}, "")
		c := fakeClient(t, roundTripFunc(func(r *http.Request) (*http.Response, error) {
			if r.Method == http.MethodDelete {
				return drop.RoundTrip(r)
			}
			return handlerTransport{f}.RoundTrip(r)
		}))
		l := mustTryAcquire(t, c, &AcquireOptions{TTL: fakeTTL})
		if err := l.Release(context.Background()); err != nil {
			t.Fatalf("Release = %v, want nil: the first attempt released it", err)
		}
		if f.ended[l.LeaseID()] != "released" {
			t.Errorf("lease not released on the server")
		}
	})
}
