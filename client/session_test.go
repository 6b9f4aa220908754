package client

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/dlmtest"
)

// connTracker is a dialer whose connections a test can count writes on and
// cut, as a network failure would.
type connTracker struct {
	mu     sync.Mutex
	conns  []net.Conn
	writes atomic.Int64
}

func (d *connTracker) client() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		d.mu.Lock()
		d.conns = append(d.conns, c)
		d.mu.Unlock()
		return countingConn{c, &d.writes}, nil
	}
	return &http.Client{Transport: tr}
}

// cut closes every connection made so far.
func (d *connTracker) cut() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, c := range d.conns {
		c.Close()
	}
	d.conns = nil
}

type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c countingConn) Write(p []byte) (int, error) {
	c.n.Add(1)
	return c.Conn.Write(p)
}

// TestSessionPushFiresLost: a force-release reaches the Lock by push, long
// before its next renewal would have noticed.
func TestSessionPushFiresLost(t *testing.T) {
	checkLeaks(t)
	s := startServer(t)
	c := newClient(t, s.URL, s.TenantKey, nil)
	ctx := ctxFor(t, time.Minute)
	l, err := c.TryAcquire(ctx, "pushed", &AcquireOptions{TTL: time.Hour}) // renewal in 20 minutes
	if err != nil {
		t.Fatal(err)
	}
	if !l.onSession {
		t.Fatal("the lock was not acquired over the session")
	}
	admin := newClient(t, s.URL, s.AdminKey, &Options{HTTPOnly: true})
	if _, err := admin.ForceRelease(ctx, "default", "pushed", ""); err != nil {
		t.Fatal(err)
	}
	waitFor(t, l.Lost(), 10*time.Second, "Lost after a force-release")
	if !errors.Is(l.Err(), dlm.ErrLeaseEnded) {
		t.Errorf("Err = %v, want lease_ended", l.Err())
	}
	var de *dlm.Error
	if errors.As(l.Err(), &de); de == nil || de.Reason != dlm.ForceReleased {
		t.Errorf("Err = %v, want reason force_released", l.Err())
	}
}

// TestSessionRenewsManyLocksTogether: a client holding many locks sends one
// renew per interval for all of them, not one per lock.
func TestSessionRenewsManyLocksTogether(t *testing.T) {
	checkLeaks(t)
	s := startServer(t)
	var d connTracker
	c := newClient(t, s.URL, s.TenantKey, &Options{HTTPClient: d.client()})
	ctx := ctxFor(t, time.Minute)
	const n = 50
	var locks []*Lock
	for i := range n {
		l, err := c.TryAcquire(ctx, "many/"+string(rune('a'+i%26))+string(rune('a'+i/26)), &AcquireOptions{TTL: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		locks = append(locks, l)
	}
	before := d.writes.Load()
	// Four and a half renewal intervals (667 ms each) of holding.
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		for _, l := range locks {
			select {
			case <-l.Lost():
				t.Fatalf("%s lost: %v", l.Name(), l.Err())
			default:
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	// One lock of its own would renew 4 times: 50 would write 200 times.
	// Together they renew in a few rounds, a message (and a ping) each.
	if w := d.writes.Load() - before; w > 2*n {
		t.Errorf("%d writes to renew %d locks for 4 intervals: not renewed together", w, n)
	}
	for _, l := range locks {
		if err := l.Release(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

// TestSessionRetryAfterCutConnection: a queued acquire whose connection is
// cut is retried on a new connection with the same idempotency key, keeps
// its place and gets one lease.
func TestSessionRetryAfterCutConnection(t *testing.T) {
	checkLeaks(t)
	s := startServer(t)
	other := newClient(t, s.URL, s.TenantKey, &Options{HTTPOnly: true})
	ctx := ctxFor(t, time.Minute)
	held, err := other.TryAcquire(ctx, "cut", nil)
	if err != nil {
		t.Fatal(err)
	}
	var d connTracker
	c := newClient(t, s.URL, s.TenantKey, &Options{HTTPClient: d.client()})
	got := make(chan *Lock, 1)
	go func() {
		l, err := c.Acquire(ctx, "cut", nil)
		if err != nil {
			t.Error(err)
		}
		got <- l
	}()
	waitForWaiter(t, other, "cut")
	d.cut() // the server withdraws the queued request; the client asks again
	dlmtest.Eventually(t, "the retry queues on a new connection", func() bool {
		d.mu.Lock()
		defer d.mu.Unlock()
		info, err := other.Inspect(ctx, "cut", "")
		return len(d.conns) > 0 && err == nil && len(info.Waiters) == 1
	})
	if err := held.Release(ctx); err != nil {
		t.Fatal(err)
	}
	l := <-got
	if l == nil {
		t.FailNow()
	}
	info, err := other.Inspect(ctx, "cut", "")
	if err != nil {
		t.Fatal(err)
	}
	if l.Token() <= held.Token() || info.Token != l.Token() || len(info.Holders) != 1 {
		t.Errorf("token %d, lock %+v: want one grant after the first holder's", l.Token(), info)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestSessionReleaseOnCloseLostOnConnectionLoss: a release_on_close lock is
// lost as soon as its session breaks, and the server releases it.
func TestSessionReleaseOnCloseLostOnConnectionLoss(t *testing.T) {
	checkLeaks(t)
	s := startServer(t)
	var d connTracker
	c := newClient(t, s.URL, s.TenantKey, &Options{HTTPClient: d.client()})
	ctx := ctxFor(t, time.Minute)
	l, err := c.TryAcquire(ctx, "roc", &AcquireOptions{ReleaseOnClose: true, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	d.cut()
	waitFor(t, l.Lost(), 10*time.Second, "Lost after the connection broke")
	other := newClient(t, s.URL, s.TenantKey, &Options{HTTPOnly: true})
	dlmtest.Eventually(t, "the server releases the lease", func() bool {
		info, err := other.Inspect(ctx, "roc", "")
		return err == nil && len(info.Holders) == 0
	})
	httpOnly := newClient(t, s.URL, s.TenantKey, &Options{HTTPOnly: true})
	if _, err := httpOnly.TryAcquire(ctx, "roc2", &AcquireOptions{ReleaseOnClose: true}); !errors.Is(err, dlm.ErrUnavailable) {
		t.Errorf("release_on_close over HTTP only = %v, want unavailable", err)
	}
}

// TestElection: candidates are elected in campaign order; resigning and a
// leader's lost connection both pass leadership on; Observe sees each term.
func TestElection(t *testing.T) {
	checkLeaks(t)
	s := startServer(t)
	ctx := ctxFor(t, time.Minute)
	var dialers [3]connTracker
	var elections [3]*Election
	for i := range elections {
		c := newClient(t, s.URL, s.TenantKey, &Options{HTTPClient: dialers[i].client()})
		elections[i] = c.NewElection("leader", "")
	}
	observer := newClient(t, s.URL, s.TenantKey, nil).NewElection("leader", "")
	octx, stop := context.WithCancel(ctx)
	observed := make(chan string, 10)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for v, err := range observer.Observe(octx) {
			if err != nil {
				return
			}
			observed <- v
		}
	}()
	if _, _, err := observer.Leader(ctx); !errors.Is(err, ErrNotLeader) {
		t.Errorf("Leader with no leader = %v, want ErrNotLeader", err)
	}
	if err := elections[0].Campaign(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	nextObserved := func(want string) {
		t.Helper()
		select {
		case v := <-observed:
			if v != want {
				t.Errorf("observed %s, want %s", v, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("did not observe %s", want)
		}
	}
	nextObserved("a") // the observer runs: it missed no term since
	elected := make(chan string, 2)
	for i, v := range []string{"b", "c"} {
		if i == 1 {
			waitForWaiters(t, observer.c, "leader", 1) // b campaigns before c
		}
		go func() {
			if err := elections[i+1].Campaign(ctx, v); err != nil {
				t.Error(err)
			}
			elected <- v
		}()
	}
	waitForWaiters(t, observer.c, "leader", 2)
	if v, _, err := observer.Leader(ctx); err != nil || v != "a" {
		t.Errorf("Leader = %q, %v; want a", v, err)
	}
	if err := elections[0].Resign(ctx); err != nil {
		t.Fatal(err)
	}
	if v := <-elected; v != "b" {
		t.Fatalf("elected %s after a resigned, want b", v)
	}
	lost := elections[1].Lost()
	dialers[1].cut() // b's connection breaks: c is elected
	waitFor(t, lost, 10*time.Second, "b's Lost")
	if v := <-elected; v != "c" {
		t.Fatalf("elected %s after b's connection broke, want c", v)
	}
	if elections[2].Token() <= 2 {
		t.Errorf("c's term token %d, want above b's", elections[2].Token())
	}
	nextObserved("b")
	nextObserved("c")
	stop()
	<-done
	if err := elections[2].Resign(ctx); err != nil {
		t.Fatal(err)
	}
}
