package client

import (
	"context"
	"errors"
	"fmt"
	"github.com/dlmhq/dlm/engine"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/dlmtest"
	"github.com/dlmhq/dlm/dlmtest/testserver"
)

// The tests in this file run against the real server (engine, SQLite store
// and HTTP API) started in-process on a loopback port.

// startServer starts a real server for one test.
func startServer(t testing.TB) *testserver.Server { return testserver.New(t, nil) }

func ctxFor(t testing.TB, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func newClient(t testing.TB, url, key string, opts *Options) *Client {
	t.Helper()
	c, err := New(url, key, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// waitFor fails t unless ch closes within d.
func waitFor(t testing.TB, ch <-chan struct{}, d time.Duration, what string) time.Time {
	t.Helper()
	select {
	case <-ch:
		return time.Now()
	case <-time.After(d):
		t.Fatalf("%s: not within %v", what, d)
		return time.Time{}
	}
}

func TestKeepAliveHoldsLeaseForSeveralTTLs(t *testing.T) {
	checkLeaks(t)
	s := startServer(t)
	c := newClient(t, s.URL, s.TenantKey, nil)
	ctx := ctxFor(t, time.Minute)
	// Short, but long enough that a renewal may take 850ms on a loaded
	// machine before the lease is declared lost.
	const ttl = 1500 * time.Millisecond
	l, err := c.TryAcquire(ctx, "jobs/keepalive", &AcquireOptions{TTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	// Hold it for four TTLs; meanwhile the lock must stay ours.
	end := time.Now().Add(4 * ttl)
	for time.Now().Before(end) {
		_, err := c.TryAcquire(ctx, "jobs/keepalive", &AcquireOptions{TTL: ttl})
		if !errors.Is(err, dlm.ErrLockConflict) {
			t.Fatalf("another acquire during the hold: %v, want lock_conflict", err)
		}
		select {
		case <-l.Lost():
			t.Fatalf("lost after %v: %v", time.Since(end.Add(-4*ttl)), l.Err())
		case <-time.After(ttl / 2):
		}
	}
	info, err := c.Inspect(ctx, "jobs/keepalive", "")
	if err != nil {
		t.Fatal(err)
	}
	if len(info.Holders) != 1 || info.Holders[0].Token != l.Token() || info.Token != l.Token() {
		t.Errorf("holders = %+v, want our lease with token %d", info.Holders, l.Token())
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Release(ctx, l.LeaseID()); !errors.Is(err, dlm.ErrLeaseEnded) {
		t.Errorf("second release = %v, want lease_ended", err)
	}
}

func TestForceReleaseFiresLostWithinOneRenewal(t *testing.T) {
	checkLeaks(t)
	s := startServer(t)
	c := newClient(t, s.URL, s.TenantKey, nil)
	admin := newClient(t, s.URL, s.AdminKey, nil)
	ctx := ctxFor(t, time.Minute)
	const ttl = 3 * time.Second // renews every 1s
	l, err := c.TryAcquire(ctx, "jobs/force", &AcquireOptions{TTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	ended, err := admin.ForceRelease(ctx, "default", "jobs/force", "")
	if err != nil || len(ended) != 1 || ended[0].Token != l.Token() {
		t.Fatalf("force-release = %v, %v", ended, err)
	}
	forced := time.Now()
	// One renewal period is ttl/3; allow as much again for the request
	// on a busy machine. Expiry would be ttl away.
	lostAt := waitFor(t, l.Lost(), 2*ttl/3, "lost signal after force-release")
	t.Logf("lost %v after the force-release", lostAt.Sub(forced))
	var e *dlm.Error
	if err := l.Err(); !errors.Is(err, ErrLockLost) || !errors.As(err, &e) || e.Reason != dlm.ForceReleased {
		t.Errorf("Err = %v, want ErrLockLost with lease_ended force_released", err)
	}
	if cause := context.Cause(l.Context()); !errors.Is(cause, ErrLockLost) {
		t.Errorf("context cause = %v", cause)
	}
	if err := l.Release(ctx); !errors.Is(err, dlm.ErrLeaseEnded) {
		t.Errorf("Release after force-release = %v, want lease_ended", err)
	}
}

func TestStoppedServerFiresLostBeforeExpiry(t *testing.T) {
	checkLeaks(t)
	s := startServer(t)
	c := newClient(t, s.URL, s.TenantKey, &Options{RequestTimeout: time.Second})
	ctx := ctxFor(t, time.Minute)
	l, err := c.TryAcquire(ctx, "jobs/stopped", &AcquireOptions{TTL: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	// The server's own expiry after its last renewal: the lease cannot
	// have ended before then.
	<-l.Lost()
	lostAt := time.Now()
	if exp := l.Lease().ExpiresAt; !lostAt.Before(exp) {
		t.Errorf("lost signalled at %v, not before the server's expiry %v", lostAt, exp)
	}
	if err := l.Err(); !errors.Is(err, ErrLockLost) || !strings.Contains(err.Error(), "no renewal confirmed") {
		t.Errorf("Err = %v", err)
	}
	rctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	_ = l.Release(rctx) // the server is gone; this must not hang
}

// dropFirst returns a transport that sends the first request whose path
// ends in suffix to the server and then drops the response, as a connection
// reset after the server acted would.
func dropFirst(suffix string) (http.RoundTripper, *atomic.Int32) {
	var n atomic.Int32
	next := http.DefaultTransport.(*http.Transport).Clone()
	var once sync.Once
	return roundTripFunc(func(r *http.Request) (*http.Response, error) {
		resp, err := next.RoundTrip(r)
		if err != nil || !strings.HasSuffix(r.URL.Path, suffix) {
			return resp, err
		}
		dropped := false
		once.Do(func() { dropped = true })
		if !dropped {
			return resp, nil
		}
		n.Add(1)
		resp.Body.Close()
		return nil, syscall.ECONNRESET
	}), &n
}

func TestRetriedAcquireAfterDroppedResponseReturnsSameLease(t *testing.T) {
	for _, tt := range []struct {
		name string
		wait bool // a blocking acquire, granted after a wait
	}{{"try", false}, {"blocking", true}} {
		t.Run(tt.name, func(t *testing.T) {
			s := startServer(t)
			rt, dropped := dropFirst("/acquire")
			// Over HTTP: TestSessionRetryAfterCutConnection is the session's.
			c := newClient(t, s.URL, s.TenantKey, &Options{HTTPClient: &http.Client{Transport: rt}, HTTPOnly: true})
			ctx := ctxFor(t, time.Minute)
			acquire := c.TryAcquire
			if tt.wait {
				acquire = c.Acquire
			}
			l, err := acquire(ctx, "orders/42", &AcquireOptions{TTL: 10 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			defer l.Release(ctx)
			if dropped.Load() != 1 {
				t.Fatalf("no response was dropped")
			}
			info, err := c.Inspect(ctx, "orders/42", "")
			if err != nil {
				t.Fatal(err)
			}
			// One grant only: the retry got the lease the first attempt made.
			if len(info.Holders) != 1 || info.Token != l.Token() {
				t.Errorf("holders %+v, last token %d, ours %d; want one lease, ours", info.Holders, info.Token, l.Token())
			}
			if _, err := c.Lease(ctx, l.LeaseID()); err != nil {
				t.Errorf("our lease id is not the live lease: %v", err)
			}
		})
	}
}

func TestAcquireWaitsThenGetsLockOnRelease(t *testing.T) {
	checkLeaks(t)
	s := startServer(t)
	c := newClient(t, s.URL, s.TenantKey, nil)
	ctx := ctxFor(t, time.Minute)
	first, err := c.TryAcquire(ctx, "q", &AcquireOptions{HolderID: "first"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.TryAcquire(ctx, "q", &AcquireOptions{HolderID: "second"})
	var e *dlm.Error
	if !errors.As(err, &e) || e.Code != dlm.CodeLockConflict || len(e.Holders) != 1 || e.Holders[0].HolderID != "first" || e.Holders[0].ID != "" {
		t.Fatalf("try while held = %v (%+v), want lock_conflict naming holder first without lease id", err, e)
	}
	_, err = c.Acquire(ctx, "q", &AcquireOptions{Wait: 200 * time.Millisecond})
	if !errors.Is(err, dlm.ErrWaitTimeout) {
		t.Fatalf("acquire with short wait = %v, want wait_timeout", err)
	}
	// A context deadline also bounds the wait, with the server's answer.
	dctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if _, err = c.Acquire(dctx, "q", nil); !errors.Is(err, dlm.ErrWaitTimeout) {
		t.Fatalf("acquire with ctx deadline = %v, want wait_timeout", err)
	}
	got := make(chan *Lock)
	go func() {
		l, err := c.Acquire(ctx, "q", &AcquireOptions{HolderID: "second"})
		if err != nil {
			t.Error(err)
		}
		got <- l
	}()
	waitForWaiter(t, c, "q")
	if err := first.Release(ctx); err != nil {
		t.Fatal(err)
	}
	second := <-got
	if second == nil {
		return
	}
	if second.Token() <= first.Token() {
		t.Errorf("token %d after %d: fencing tokens must grow", second.Token(), first.Token())
	}
	if err := second.Release(ctx); err != nil {
		t.Fatal(err)
	}
}

// waitForWaiter waits until name has a waiter queued.
func waitForWaiter(t testing.TB, c *Client, name string) { waitForWaiters(t, c, name, 1) }

// waitForWaiters waits until name has n waiters queued.
func waitForWaiters(t testing.TB, c *Client, name string, n int) {
	t.Helper()
	dlmtest.Eventually(t, fmt.Sprintf("%d waiters queue on %s", n, name), func() bool {
		info, err := c.Inspect(context.Background(), name, "")
		if err != nil {
			t.Fatal(err)
		}
		return len(info.Waiters) == n
	})
}

func TestWithLockAgainstServer(t *testing.T) {
	checkLeaks(t)
	s := startServer(t)
	c := newClient(t, s.URL, s.TenantKey, nil)
	ctx := ctxFor(t, time.Minute)
	var token int64
	err := c.WithLock(ctx, "reports/nightly", nil, func(ctx context.Context, l *Lock) error {
		token = l.Token()
		return nil
	})
	if err != nil || token == 0 {
		t.Fatalf("WithLock = %v, token %d", err, token)
	}
	info, err := c.Inspect(ctx, "reports/nightly", "")
	if err != nil || len(info.Holders) != 0 {
		t.Errorf("after WithLock: %+v, %v; want released", info, err)
	}
}

func TestSharedAndScopesAndList(t *testing.T) {
	s := startServer(t)
	c := newClient(t, s.URL, s.TenantKey, nil)
	ctx := ctxFor(t, time.Minute)
	var locks []*Lock
	for _, name := range []string{"ls/a", "ls/b", "ls/c", "other"} {
		for range 2 {
			l, err := c.TryAcquire(ctx, name, &AcquireOptions{Mode: dlm.Shared})
			if err != nil {
				t.Fatal(err)
			}
			locks = append(locks, l)
		}
	}
	g, err := c.TryAcquire(ctx, "ls/a", &AcquireOptions{Scope: ScopeGlobal})
	if err != nil {
		t.Fatalf("global scope is a different namespace: %v", err)
	}
	locks = append(locks, g)
	var names []string
	for l, err := range c.ListAll(ctx, &ListOptions{Prefix: "ls/", Limit: 2}) {
		if err != nil {
			t.Fatal(err)
		}
		if len(l.Holders) != 2 || l.Holders[0].Mode != dlm.Shared {
			t.Errorf("%s holders = %+v, want two shared", l.Name, l.Holders)
		}
		names = append(names, l.Name)
	}
	if strings.Join(names, " ") != "ls/a ls/b ls/c" {
		t.Errorf("listed %q, want ls/a ls/b ls/c across pages", names)
	}
	page, err := c.List(ctx, &ListOptions{Scope: ScopeGlobal})
	if err != nil || len(page.Locks) != 1 || page.Locks[0].Scope != ScopeGlobal {
		t.Errorf("global list = %+v, %v", page, err)
	}
	for _, l := range locks {
		if err := l.Release(ctx); err != nil {
			t.Error(err)
		}
	}
}

func TestErrorsFromServer(t *testing.T) {
	s := startServer(t)
	ctx := ctxFor(t, time.Minute)
	bad := newClient(t, s.URL, "dlm_nope_nope", nil)
	if _, err := bad.TryAcquire(ctx, "a", nil); !errors.Is(err, dlm.ErrUnauthenticated) {
		t.Errorf("bad key: %v, want unauthenticated", err)
	}
	c := newClient(t, s.URL, s.TenantKey, nil)
	if _, err := c.Renew(ctx, "no-such-lease", 0); !errors.Is(err, dlm.ErrNotFound) {
		t.Errorf("unknown lease: %v, want not_found", err)
	}
	l, err := c.TryAcquire(ctx, "a", &AcquireOptions{TTL: time.Second, NoKeepAlive: true})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, l.Lost(), 10*time.Second, "lost at expiry without keep-alive")
	// The client declares loss a little before the server's expiry; poll
	// the server until it agrees.
	var e *dlm.Error
	dlmtest.Eventually(t, "the server has expired the lease", func() bool {
		_, err = c.Lease(ctx, l.LeaseID())
		return errors.As(err, &e)
	})
	if _, err = c.Renew(ctx, l.LeaseID(), 0); !errors.As(err, &e) || e.Code != dlm.CodeLeaseEnded || e.Reason != dlm.Expired {
		t.Errorf("renew after expiry = %v, want lease_ended expired", err)
	}
	if _, err := c.TryAcquire(ctx, "a", &AcquireOptions{TTL: time.Microsecond}); err == nil {
		t.Errorf("TTL below 1ms accepted")
	}
}

func TestAcquireLongerThanOneRequestWait(t *testing.T) {
	checkLeaks(t)
	s := startServer(t)
	// Each request waits at most 200ms, as against a server with a short
	// --max-wait; Acquire asks again until the caller's limit.
	c := newClient(t, s.URL, s.TenantKey, &Options{MaxRequestWait: 200 * time.Millisecond})
	ctx := ctxFor(t, time.Minute)
	first, err := c.TryAcquire(ctx, "chunks", nil)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := c.Acquire(ctx, "chunks", &AcquireOptions{Wait: 700 * time.Millisecond}); !errors.Is(err, dlm.ErrWaitTimeout) {
		t.Fatalf("Acquire = %v, want wait_timeout", err)
	}
	if d := time.Since(start); d < 700*time.Millisecond {
		t.Errorf("gave up after %v, before the 700ms asked for", d)
	}
	// Released after several requests' waits: the waiting Acquire gets it.
	release := time.AfterFunc(700*time.Millisecond, func() { first.Release(ctx) })
	defer release.Stop()
	second, err := c.Acquire(ctx, "chunks", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := second.Release(ctx); err != nil {
		t.Fatal(err)
	}
}

// watchStream is a Watch running in the background of a test.
type watchStream struct {
	events chan dlm.Event
	errs   chan error // the error that ended the watch
	cancel context.CancelFunc
	done   chan struct{}
}

// startWatch runs c.Watch with o until stop or the end of the test.
func startWatch(t testing.TB, ctx context.Context, c *Client, o *WatchOptions) *watchStream {
	ctx, cancel := context.WithCancel(ctx)
	w := &watchStream{events: make(chan dlm.Event), errs: make(chan error, 1), cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for e, err := range c.Watch(ctx, o) {
			if err != nil {
				w.errs <- err
				return
			}
			select {
			case w.events <- e:
			case <-ctx.Done():
			}
		}
	}()
	t.Cleanup(func() { w.stop() })
	return w
}

// next returns the next event, failing t if the watch ends or shows none
// within 10s.
func (w *watchStream) next(t testing.TB, what string) dlm.Event {
	t.Helper()
	select {
	case e := <-w.events:
		return e
	case err := <-w.errs:
		t.Fatalf("watch ended waiting for %s: %v", what, err)
	case <-time.After(10 * time.Second):
		t.Fatalf("no %s within 10s", what)
	}
	return dlm.Event{}
}

// stop ends the watch and returns the error it ended with.
func (w *watchStream) stop() error {
	w.cancel()
	<-w.done
	select {
	case err := <-w.errs:
		return err
	default:
		return nil
	}
}

func TestWatchAgainstServer(t *testing.T) {
	checkLeaks(t)
	s := startServer(t)
	c := newClient(t, s.URL, s.TenantKey, nil)
	ctx := ctxFor(t, time.Minute)
	l, err := c.TryAcquire(ctx, "watched/a", &AcquireOptions{HolderID: "w1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	// Event 1 is the acquire: since=1 replays from the release on.
	w := startWatch(t, ctx, c, &WatchOptions{Prefix: "watched/", Since: 1})
	if e := w.next(t, "replayed release"); e.ID != 2 || e.Type != dlm.EventReleased || e.Token != l.Token() || e.HolderID != "w1" || e.Key.Name != "watched/a" {
		t.Errorf("first event = %+v, want the release of watched/a", e)
	}
	l2, err := c.TryAcquire(ctx, "watched/b", &AcquireOptions{HolderID: "w2", Mode: dlm.Shared})
	if err != nil {
		t.Fatal(err)
	}
	if e := w.next(t, "live acquire"); e.Type != dlm.EventAcquired || e.Token != l2.Token() || e.Mode != dlm.Shared || e.Key.Namespace != CallerTenant {
		t.Errorf("live event = %+v, want the shared acquire of watched/b", e)
	}
	if err := l2.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if e := w.next(t, "live release"); e.Type != dlm.EventReleased || e.Key.Name != "watched/b" {
		t.Errorf("event = %+v, want the release of watched/b", e)
	}
	if err := w.stop(); !errors.Is(err, context.Canceled) {
		t.Errorf("watch ended with %v, want context.Canceled", err)
	}
}

// proxied starts a server with two clients: direct, and c through a proxy p
// that can cut c's connections.
func proxied(t *testing.T) (s *testserver.Server, p *proxy, direct, c *Client) {
	t.Helper()
	s = startServer(t)
	p, proxyURL := newProxy(t, s.URL)
	return s, p, newClient(t, s.URL, s.TenantKey, nil), newClient(t, proxyURL, s.TenantKey, nil)
}

func TestWatchResumesAfterConnectionCut(t *testing.T) {
	checkLeaks(t)
	_, p, direct, c := proxied(t)
	ctx := ctxFor(t, time.Minute)
	event := func() {
		t.Helper()
		if _, err := direct.TryAcquire(ctx, "cut", &AcquireOptions{Mode: dlm.Shared, NoKeepAlive: true}); err != nil {
			t.Fatal(err)
		}
	}
	event() // id 1
	event() // id 2
	var ids []int64
	for e, err := range c.Watch(ctx, &WatchOptions{Name: "cut", Since: 1}) {
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, e.ID)
		if len(ids) == 3 {
			break
		}
		// Cut the connection, and make the next event while the watch
		// is down or reconnecting.
		p.cut()
		event()
	}
	if want := []int64{2, 3, 4}; !slices.Equal(ids, want) {
		t.Errorf("watched ids %v, want %v: each once, none missed", ids, want)
	}
}

// TestWatchCutBeforeAnyEventResumesFromItsStart: a watch from now whose
// connection drops before it has seen an event resumes from where it
// started, so an event made while it was away is not lost.
func TestWatchCutBeforeAnyEventResumesFromItsStart(t *testing.T) {
	checkLeaks(t)
	s, p, direct, c := proxied(t)
	ctx := ctxFor(t, time.Minute)
	event := func(holder string) {
		t.Helper()
		if _, err := direct.TryAcquire(ctx, "quiet", &AcquireOptions{HolderID: holder, Mode: dlm.Shared, NoKeepAlive: true}); err != nil {
			t.Fatal(err)
		}
	}
	event("before") // before the watch: not shown
	w := startWatch(t, ctx, c, &WatchOptions{Name: "quiet"})
	dlmtest.Eventually(t, "the watch is connected", func() bool { return s.Engine.Watchers() == 1 })
	p.setRefuse(true)
	p.cut()
	event("while-away")
	p.setRefuse(false)
	// Make events until the watch shows one: it has reconnected.
	var first dlm.Event
	for i := 0; first.ID == 0; i++ {
		event(fmt.Sprint("after-", i))
		select {
		case first = <-w.events:
		case err := <-w.errs:
			t.Fatal(err)
		case <-time.After(200 * time.Millisecond):
			if i == 100 {
				t.Fatal("the watch did not reconnect within 20s")
			}
		}
	}
	if first.HolderID != "while-away" {
		t.Errorf("first event after the reconnect = %+v, want the one made while the watch was away", first)
	}
}

// TestWatchFromStartReplaysTheWholeLog: FromStart replays from the oldest
// retained event, where Since 0 shows only what comes after the call.
func TestWatchFromStartReplaysTheWholeLog(t *testing.T) {
	checkLeaks(t)
	s := startServer(t)
	c := newClient(t, s.URL, s.TenantKey, nil)
	ctx := ctxFor(t, time.Minute)
	if _, err := c.TryAcquire(ctx, "old", &AcquireOptions{HolderID: "early", NoKeepAlive: true}); err != nil {
		t.Fatal(err)
	}
	for e, err := range c.Watch(ctx, &WatchOptions{FromStart: true}) {
		if err != nil {
			t.Fatal(err)
		}
		if e.ID != 1 || e.HolderID != "early" {
			t.Errorf("first event from the start = %+v, want event 1 by early", e)
		}
		break
	}
	dlmtest.Eventually(t, "the server has closed the first watch", func() bool { return s.Engine.Watchers() == 0 })
	events := startWatch(t, ctx, c, &WatchOptions{})
	dlmtest.Eventually(t, "the watch is connected", func() bool { return s.Engine.Watchers() == 1 })
	if _, err := c.TryAcquire(ctx, "new", &AcquireOptions{HolderID: "late", NoKeepAlive: true}); err != nil {
		t.Fatal(err)
	}
	if e := events.next(t, "the live event"); e.HolderID != "late" {
		t.Errorf("first event of a watch from now = %+v, want the acquire by late", e)
	}
}

// TestSlowWatcherErrorHasItsOwnCode: a watch the server drops for falling
// behind ends with dlm.ErrSlowConsumer, not dlm.ErrUnavailable, and Watch
// counts it among the errors it reconnects after.
func TestSlowWatcherErrorHasItsOwnCode(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := testserver.New(t, &testserver.Options{Engine: engine.Options{WatchBuffer: 16}, Listener: dlmtest.SmallSendBuffers(ln)})
	c := newClient(t, s.URL, s.TenantKey, &Options{HTTPClient: &http.Client{Transport: &http.Transport{DialContext: dlmtest.DialSmallReceiveBuffer}}})
	ctx := ctxFor(t, time.Minute)
	conn, err := c.dialWatch(ctx, &WatchOptions{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow() // the server registered the watch before answering the upgrade
	r := engine.AcquireRequest{Tenant: "default", Key: dlm.Key{Namespace: "default", Name: "burst"}, HolderID: "h"}
	for i := 0; s.Engine.Watchers() > 0; i++ {
		if i == 5000 {
			t.Fatal("5000 acquire/release cycles and the watcher that does not read is still watching")
		}
		l, _, err := s.Engine.Acquire(ctx, r)
		if err == nil {
			_, err = s.Engine.Release(ctx, l.Tenant, l.ID)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	_, _, err = readEvents(ctx, conn, 0, func(dlm.Event, error) bool { return true })
	if !errors.Is(err, dlm.ErrSlowConsumer) || errors.Is(err, dlm.ErrUnavailable) || !transient(err) {
		t.Fatalf("dropped watch ended with %v; want dlm.ErrSlowConsumer (not ErrUnavailable), which Watch resumes after", err)
	}
}
