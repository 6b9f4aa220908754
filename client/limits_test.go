package client

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dlmhq/dlm/dlmtest"
	"github.com/dlmhq/dlm/dlmtest/testserver"
	"github.com/dlmhq/dlm/engine"
	"github.com/dlmhq/dlm/wire"
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

// TestFromEnvReadsTheLocalCredentials: without DLM_KEY, FromEnv takes the
// tenant key from DLM_DATA_DIR's credentials.json, as the command line
// does, and fails clearly when there is none.
func TestFromEnvReadsTheLocalCredentials(t *testing.T) {
	s := startServer(t)
	dir := t.TempDir()
	b, _ := json.Marshal(wire.Credentials{Tenant: "default", TenantKey: s.TenantKey, TenantKeyID: s.TenantKeyID})
	if err := os.WriteFile(filepath.Join(dir, wire.CredentialsFile), b, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DLM_URL", s.URL)
	t.Setenv("DLM_KEY", "")
	t.Setenv("DLM_DATA_DIR", dir)
	c, err := FromEnv(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := ctxFor(t, time.Minute)
	l, err := c.TryAcquire(ctx, "from-env", &AcquireOptions{NoKeepAlive: true})
	if err != nil {
		t.Fatalf("TryAcquire with the key from credentials.json: %v", err)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}

	t.Setenv("DLM_DATA_DIR", t.TempDir())
	if _, err := FromEnv(nil); err == nil || !strings.Contains(err.Error(), "DLM_KEY") {
		t.Errorf("FromEnv with no key anywhere = %v, want an error naming DLM_KEY", err)
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
	events := startWatch(t, ctx, c, &WatchOptions{})
	dlmtest.Eventually(t, "the watch is connected", func() bool { return s.Engine.Watchers() == 1 })
	if _, err := c.TryAcquire(ctx, "new", &AcquireOptions{HolderID: "late", NoKeepAlive: true}); err != nil {
		t.Fatal(err)
	}
	if e := events.next(t, "the live event"); e.HolderID != "late" {
		t.Errorf("first event of a watch from now = %+v, want the acquire by late", e)
	}
}
