package client

import (
	"testing"
	"time"

	"github.com/dlmhq/dlm/dlmtest"
	"github.com/dlmhq/dlm/dlmtest/testserver"
	"github.com/dlmhq/dlm/engine"
)

// TestAcquireKeepsItsPlaceAcrossTheServersMaxWait: against a server whose
// --max-wait is 2s, a blocking Acquire (which asks for 5m at first) learns
// the limit, waits in requests of 2s, and keeps its FIFO place from one to
// the next: a later waiter is not served before it.
func TestAcquireKeepsItsPlaceAcrossTheServersMaxWait(t *testing.T) {
	checkLeaks(t)
	s := testserver.New(t, &testserver.Options{Engine: engine.Options{MaxWait: 2 * time.Second}})
	c := newClient(t, s.URL, s.TenantKey, nil)
	ctx := ctxFor(t, time.Minute)
	holder, err := c.TryAcquire(ctx, "fifo", &AcquireOptions{HolderID: "holder"})
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		l   *Lock
		err error
	}
	wait := func(holder string) chan result {
		ch := make(chan result, 1)
		go func() {
			l, err := c.Acquire(ctx, "fifo", &AcquireOptions{HolderID: holder})
			ch <- result{l, err}
		}()
		return ch
	}
	first := wait("first")
	waitForWaiters(t, c, "fifo", 1)
	second := wait("second")
	waitForWaiters(t, c, "fifo", 2)
	info, err := c.Inspect(ctx, "fifo", "")
	if err != nil {
		t.Fatal(err)
	}
	before := info.Waiters
	// Both outlive the server's longest wait: each request has been taken
	// over by the next, which moves the deadline of the same queue entry
	// (queued_at stays), or has lost its place and queued again.
	dlmtest.Eventually(t, "both waits are past their first request", func() bool {
		info, err = c.Inspect(ctx, "fifo", "")
		if err != nil {
			t.Fatal(err)
		}
		return len(info.Waiters) == 2 && info.Waiters[0].Deadline.After(before[1].Deadline) && info.Waiters[1].Deadline.After(before[1].Deadline)
	})
	for i, w := range info.Waiters {
		if w.HolderID != before[i].HolderID || !w.QueuedAt.Equal(before[i].QueuedAt) {
			t.Errorf("waiter %d after the first requests' waits ran out = %s queued at %v, want %s queued at %v: the same entry",
				i, w.HolderID, w.QueuedAt, before[i].HolderID, before[i].QueuedAt)
		}
	}
	select {
	case r := <-first:
		t.Fatalf("first waiter answered before the release: %v", r.err)
	case r := <-second:
		t.Fatalf("second waiter answered before the release: %v", r.err)
	default:
	}
	if err := holder.Release(ctx); err != nil {
		t.Fatal(err)
	}
	r := <-first
	if r.err != nil {
		t.Fatalf("first waiter: %v", r.err)
	}
	if err := r.l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	r2 := <-second
	if r2.err != nil {
		t.Fatalf("second waiter: %v", r2.err)
	}
	if r2.l.Token() <= r.l.Token() {
		t.Errorf("second waiter's token %d, first's %d: served out of order", r2.l.Token(), r.l.Token())
	}
	if err := r2.l.Release(ctx); err != nil {
		t.Fatal(err)
	}
}
