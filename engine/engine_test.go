package engine_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/dlmtest"
	"github.com/dlmhq/dlm/engine"
	"github.com/dlmhq/dlm/sqlite"
)

const tenant = "t1"

func key(name string) dlm.Key { return dlm.Key{Namespace: tenant, Name: name} }

// open returns an engine on a fresh embedded store, both on clock.
func open(t *testing.T, clock dlm.Clock, opts engine.Options) (*engine.Engine, dlm.Store) {
	t.Helper()
	st, err := sqlite.OpenWith(filepath.Join(t.TempDir(), "dlm.db"), sqlite.Options{Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return start(t, st, clock, opts), st
}

func start(t *testing.T, st dlm.Store, clock dlm.Clock, opts engine.Options) *engine.Engine {
	opts.Clock = clock
	e := engine.New(st, opts)
	t.Cleanup(e.Close)
	if _, _, _, err := e.CreateTenant(t.Context(), tenant); err != nil {
		t.Fatal(err)
	}
	return e
}

func req(name, holder string, ttl, wait time.Duration) engine.AcquireRequest {
	return engine.AcquireRequest{Tenant: tenant, Key: key(name), HolderID: holder, TTL: ttl, Wait: wait}
}

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// The sweeper ends a lease when the clock passes its expiry, and grants
// the waiter behind it, without any real time passing.
func TestExpiryOnTheManualClock(t *testing.T) {
	clock := dlmtest.NewManualClock(epoch)
	e, _ := open(t, clock, engine.Options{})
	ctx := t.Context()
	a, _, err := e.Acquire(ctx, req("x", "a", 10*time.Second, 0))
	if err != nil {
		t.Fatal(err)
	}
	if !a.ExpiresAt.Equal(epoch.Add(10 * time.Second)) {
		t.Fatalf("expires at %v; want the clock's now + TTL", a.ExpiresAt)
	}
	got := make(chan dlm.Lease, 1)
	go func() {
		l, _, err := e.Acquire(ctx, req("x", "b", 10*time.Second, time.Minute))
		if err != nil {
			t.Error(err)
		}
		got <- l
	}()
	// The waiter's deadline timer and the sweeper's: both asleep.
	if !clock.WaitTimers(2, ctx.Done()) {
		t.Fatal(ctx.Err())
	}
	clock.Advance(9 * time.Second)
	if _, err := e.Lease(ctx, tenant, a.ID); err != nil {
		t.Fatalf("A at 9 s of 10: %v", err)
	}
	// The advance woke the sweeper (it sleeps at most a second); once it
	// sleeps again, the next advance wakes it at A's expiry.
	if !clock.WaitTimers(2, ctx.Done()) {
		t.Fatal(ctx.Err())
	}
	clock.Advance(time.Second)
	b := <-got
	if !b.AcquiredAt.Equal(epoch.Add(10*time.Second)) || b.Token <= a.Token {
		t.Errorf("B = %+v; want granted at A's expiry with a greater token than %d", b, a.Token)
	}
	if _, err := e.Lease(ctx, tenant, a.ID); !errors.Is(err, dlm.ErrLeaseEnded) {
		t.Errorf("A after expiry: %v; want lease_ended", err)
	}
}

// A queued acquire times out when the clock passes its wait.
func TestWaitTimeoutOnTheManualClock(t *testing.T) {
	clock := dlmtest.NewManualClock(epoch)
	e, _ := open(t, clock, engine.Options{})
	ctx := t.Context()
	if _, _, err := e.Acquire(ctx, req("x", "a", time.Hour, 0)); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, _, err := e.Acquire(ctx, req("x", "b", time.Hour, 5*time.Second))
		done <- err
	}()
	if !clock.WaitTimers(2, ctx.Done()) {
		t.Fatal(ctx.Err())
	}
	clock.Advance(5 * time.Second)
	if err := <-done; !errors.Is(err, dlm.ErrWaitTimeout) {
		t.Fatalf("B after 5 s of a 5 s wait: %v; want wait_timeout", err)
	}
}

// gatedStore holds the first Load it is armed for until released, so that
// the operations behind it queue up and form one group.
type gatedStore struct {
	dlm.Store
	mu     sync.Mutex
	armed  bool
	loaded chan struct{}
	open   chan struct{}
	needs  []dlm.Need
}

func (g *gatedStore) Load(ctx context.Context, need *dlm.Need) (dlm.Batch, error) {
	g.mu.Lock()
	hold := g.armed
	g.armed = false
	g.needs = append(g.needs, *need)
	g.mu.Unlock()
	if hold {
		g.loaded <- struct{}{}
		<-g.open
	}
	return g.Store.Load(ctx, need)
}

// Concurrent operations share one load and one commit, and an operation
// refused inside a group (a tenant limit) leaves no trace while the others
// of its group commit.
func TestGroupRefusesOneAndCommitsTheRest(t *testing.T) {
	clock := dlmtest.NewManualClock(epoch)
	st, err := sqlite.OpenWith(filepath.Join(t.TempDir(), "dlm.db"), sqlite.Options{Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	g := &gatedStore{Store: st, loaded: make(chan struct{}), open: make(chan struct{})}
	const n = 8
	e := start(t, g, clock, engine.Options{MaxLeasesPerTenant: n})
	ctx := t.Context()

	g.mu.Lock()
	g.armed = true
	g.mu.Unlock()
	first := make(chan error, 1)
	go func() {
		_, _, err := e.Acquire(ctx, req("first", "h", time.Hour, 0))
		first <- err
	}()
	<-g.loaded // the first op's group is loading: the next ones queue
	type result struct {
		name string
		err  error
	}
	results := make(chan result, n)
	for i := range n {
		name := string(rune('a' + i))
		go func() {
			_, _, err := e.Acquire(ctx, req(name, "h", time.Hour, 0))
			results <- result{name, err}
		}()
	}
	dlmtest.Eventually(t, "every acquire queued behind the gate", func() bool {
		return engine.Queued(e) == n
	})
	close(g.open)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	var refused []string
	for range n {
		r := <-results
		switch {
		case r.err == nil:
		case errors.Is(r.err, dlm.ErrLimitExceeded):
			refused = append(refused, r.name)
		default:
			t.Fatalf("acquire %s: %v", r.name, r.err)
		}
	}
	if len(refused) != 1 {
		t.Fatalf("refused %v; want exactly one of %d (the tenant may hold %d)", refused, n, n)
	}
	if got := len(g.needs); got != 2 {
		t.Errorf("%d loads; want 2 (the first op, then the %d queued behind it in one group)", got, n)
	} else if len(g.needs[1].Keys) != n {
		t.Errorf("the second group loaded %d keys; want %d", len(g.needs[1].Keys), n)
	}
	s, err := e.Inspect(ctx, key(refused[0]))
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Holders) != 0 || s.Token != 0 {
		t.Errorf("the refused lock %s = %+v; want untouched", refused[0], s)
	}
}

// A lease released earlier in a group frees its idempotency key for the
// decisions after it, as a release committed before would: an acquire of
// another lock with that key in the same group is granted, not refused as a
// reuse.
func TestGroupFreesIdempotencyKeyOfEndedLease(t *testing.T) {
	clock := dlmtest.NewManualClock(epoch)
	st, err := sqlite.OpenWith(filepath.Join(t.TempDir(), "dlm.db"), sqlite.Options{Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	g := &gatedStore{Store: st, loaded: make(chan struct{}), open: make(chan struct{})}
	e := start(t, g, clock, engine.Options{})
	ctx := t.Context()
	first := req("k1", "h", time.Hour, 0)
	first.IdempotencyKey = "job-7"
	held, _, err := e.Acquire(ctx, first)
	if err != nil {
		t.Fatal(err)
	}

	g.mu.Lock()
	g.armed = true
	g.mu.Unlock()
	gate := make(chan error, 1)
	go func() {
		_, _, err := e.Acquire(ctx, req("gate", "h", time.Hour, 0))
		gate <- err
	}()
	<-g.loaded
	released := make(chan error, 1)
	go func() {
		_, err := e.Release(ctx, tenant, held.ID)
		released <- err
	}()
	dlmtest.Eventually(t, "the release queued behind the gate", func() bool { return engine.Queued(e) == 1 })
	again := req("k2", "h", time.Hour, 0)
	again.IdempotencyKey = "job-7"
	acquired := make(chan error, 1)
	go func() {
		_, _, err := e.Acquire(ctx, again)
		acquired <- err
	}()
	dlmtest.Eventually(t, "the acquire queued after it", func() bool { return engine.Queued(e) == 2 })
	close(g.open)
	for _, c := range []chan error{gate, released, acquired} {
		if err := <-c; err != nil {
			t.Fatal(err)
		}
	}
	if len(g.needs) != 3 || len(g.needs[2].Keys) != 1 || len(g.needs[2].Leases) != 1 {
		t.Fatalf("loads %+v; want the release and the acquire in one group", g.needs)
	}
}

// A Listener is told of the ends of leases and of waiters queued on the
// locks it follows, in order, but not of grants and renewals.
func TestListenerGetsEndsAndWaitersOnly(t *testing.T) {
	e, _ := open(t, dlmtest.NewManualClock(epoch), engine.Options{})
	ctx := t.Context()
	ln, err := e.Listen(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ln.Follow(key("x"))
	a, _, err := e.Acquire(ctx, req("x", "a", 10*time.Second, 0))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Renew(ctx, tenant, a.ID, 0); err != nil {
		t.Fatal(err)
	}
	queued := make(chan error, 1)
	go func() {
		_, _, err := e.Acquire(ctx, req("x", "b", 10*time.Second, time.Minute))
		queued <- err
	}()
	for i, w := range []dlm.EventType{dlm.EventWaiting, dlm.EventReleased} {
		ev := <-ln.Events()
		if ev.Type != w {
			t.Fatalf("event %d is %v, want %v", i, ev.Type, w)
		}
		if w == dlm.EventWaiting {
			if _, err := e.Release(ctx, tenant, a.ID); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := <-queued; err != nil {
		t.Fatal(err)
	}
	// b's grant came after the release: nothing more is delivered.
	select {
	case ev := <-ln.Events():
		t.Fatalf("unexpected %v event", ev.Type)
	default:
	}
}
