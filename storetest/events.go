package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/dlmtest"
	"github.com/dlmhq/dlm/engine"
	"github.com/google/go-cmp/cmp"
)

// seen is an event as a test compares it: everything but ID and time.
type seen struct {
	Type   string
	Name   string
	Holder string
	Mode   string
	Token  int64
}

func summarize(events []dlm.Event) []seen {
	out := []seen{}
	for _, e := range events {
		out = append(out, seen{e.Type.String(), e.Key.Name, e.HolderID, e.Mode.String(), e.Token})
	}
	return out
}

// history reads every event of tenant after since.
func (e *env) history(q engine.EventQuery) []dlm.Event {
	e.t.Helper()
	var all []dlm.Event
	for {
		page, next, err := e.engine.Events(e.ctx, q)
		if err != nil {
			e.t.Fatalf("events: %v", err)
		}
		all = append(all, page...)
		if len(page) == 0 {
			return all
		}
		q.Since = next
	}
}

// testCountRetentionWithinSeconds: README's Operations. A log over
// EventRetentionCount is trimmed back to it while the engine runs, within
// seconds rather than at the minutely pass.
func testCountRetentionWithinSeconds(t *testing.T, open suite) {
	e := newEnv(t, open, engine.Options{EventRetentionCount: 10})
	for range 25 {
		e.release(e.acquire(areq("retained", "h", dlm.Exclusive)))
	}
	var kept []dlm.Event
	dlmtest.Eventually(t, "the log is trimmed to the last 10 events", func() bool {
		kept = e.history(engine.EventQuery{Tenant: tenant})
		return len(kept) <= 10
	})
	if len(kept) != 10 || kept[0].ID != 41 || kept[9].ID != 50 {
		t.Errorf("kept %d events; want the last 10 of 50, ids 41..50", len(kept))
	}
	// Watching from before the log is refused with a code of its own.
	_, err := e.engine.Watch(e.ctx, engine.EventQuery{Tenant: tenant, Since: 1}, true)
	if !errors.Is(err, dlm.ErrCompacted) || errors.Is(err, dlm.ErrNotFound) {
		t.Errorf("watch since a pruned event: %v, want the code compacted", err)
	}
}

func testEventLog(t *testing.T, open suite) {
	e := newClockedEnv(t, open, engine.Options{})
	a := e.acquire(areq("ev", "a", dlm.Exclusive))
	w := areq("ev", "w", dlm.Shared)
	w.Wait = 20 * time.Second
	ch := e.waitFor(e.ctx, w)
	e.waitQueued("ev", 1)
	if _, err := e.engine.Renew(e.ctx, tenant, a.ID, 0); err != nil {
		t.Fatal(err)
	}
	e.release(a)
	got := <-ch
	if got.err != nil {
		t.Fatal(got.err)
	}
	if _, err := e.engine.ForceRelease(e.ctx, k("ev")); err != nil {
		t.Fatal(err)
	}
	short := areq("ev", "s", dlm.Exclusive)
	short.TTL = 100 * time.Millisecond
	s := e.acquire(short)
	// Nobody touches the lock: the sweeper records the expiry on its own.
	e.pass(short.TTL, "the expiry is recorded", func() bool {
		evs := e.history(engine.EventQuery{Tenant: tenant, Name: "ev"})
		return len(evs) > 0 && evs[len(evs)-1].Type == dlm.EventExpired
	})
	events := e.history(engine.EventQuery{Tenant: tenant})
	want := []seen{
		{"acquired", "ev", "a", "exclusive", a.Token},
		{"waiting", "ev", "w", "shared", 0},
		{"renewed", "ev", "a", "exclusive", a.Token},
		{"released", "ev", "a", "exclusive", a.Token},
		{"acquired", "ev", "w", "shared", got.lease.Token},
		{"force_released", "ev", "w", "shared", got.lease.Token},
		{"acquired", "ev", "s", "exclusive", s.Token},
		{"expired", "ev", "s", "exclusive", s.Token},
	}
	if diff := cmp.Diff(summarize(events), want); diff != "" {
		t.Errorf("events (-got +want):\n%s", diff)
	}
	for i := 1; i < len(events); i++ {
		if events[i].ID <= events[i-1].ID {
			t.Errorf("event ids not increasing: %d then %d", events[i-1].ID, events[i].ID)
		}
	}
	if len(events) > 0 && !events[len(events)-1].At.Equal(s.ExpiresAt) {
		t.Errorf("expired event at %v, lease expired at %v", events[len(events)-1].At, s.ExpiresAt)
	}
	// Paging by limit returns the same sequence.
	var paged []dlm.Event
	for q := (engine.EventQuery{Tenant: tenant, Limit: 3}); ; {
		page, next, err := e.engine.Events(e.ctx, q)
		if err != nil || len(page) > 3 {
			t.Fatalf("page of %d: %v", len(page), err)
		}
		if len(page) == 0 {
			break
		}
		paged, q.Since = append(paged, page...), next
	}
	if diff := cmp.Diff(summarize(paged), summarize(events)); diff != "" {
		t.Errorf("paged events (-got +want):\n%s", diff)
	}
}

func testEventIsolationAndFilters(t *testing.T, open suite) {
	e := newEnv(t, open, engine.Options{})
	e.acquire(areq("jobs/1", "a", dlm.Exclusive))
	e.acquire(areq("jobs/2", "a", dlm.Exclusive))
	e.acquire(areq("other", "a", dlm.Exclusive))
	if _, _, err := e.engine.Acquire(e.ctx, engine.AcquireRequest{Tenant: "globex", Key: dlm.Key{Namespace: "globex", Name: "jobs/1"}, HolderID: "g"}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.engine.Acquire(e.ctx, engine.AcquireRequest{Tenant: "globex", Key: dlm.Key{Namespace: dlm.GlobalNamespace, Name: "jobs/g"}, HolderID: "g"}); err != nil {
		t.Fatal(err)
	}
	names := func(q engine.EventQuery) string {
		var ns []string
		for _, ev := range e.history(q) {
			ns = append(ns, ev.Key.Scope()+":"+ev.Key.Name)
		}
		return fmt.Sprint(ns)
	}
	for _, tt := range []struct {
		q    engine.EventQuery
		want string
	}{
		{engine.EventQuery{Tenant: tenant}, "[tenant:jobs/1 tenant:jobs/2 tenant:other global:jobs/g]"},
		{engine.EventQuery{Tenant: tenant, Prefix: "jobs/"}, "[tenant:jobs/1 tenant:jobs/2 global:jobs/g]"},
		{engine.EventQuery{Tenant: tenant, Name: "jobs/1"}, "[tenant:jobs/1]"},
		{engine.EventQuery{Tenant: tenant, Scope: "global"}, "[global:jobs/g]"},
		{engine.EventQuery{Tenant: tenant, Scope: "tenant", Prefix: "o"}, "[tenant:other]"},
		{engine.EventQuery{Tenant: "globex"}, "[tenant:jobs/1 global:jobs/g]"},
	} {
		if got := names(tt.q); got != tt.want {
			t.Errorf("%+v: %s, want %s", tt.q, got, tt.want)
		}
	}
}

// collect reads n events from w.
func collect(t *testing.T, ctx context.Context, w *engine.Watcher, n int) []dlm.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	var out []dlm.Event
	for len(out) < n {
		ev, err := w.Next(ctx)
		if err != nil {
			t.Fatalf("after %d of %d events: %v", len(out), n, err)
		}
		out = append(out, ev)
	}
	return out
}

func testWatchBacklogThenLiveWithoutGaps(t *testing.T, open suite) {
	e := newEnv(t, open, engine.Options{})
	for i := range 5 {
		e.release(e.acquire(areq(fmt.Sprint("pre/", i), "a", dlm.Exclusive)))
	}
	// Writers keep committing while watchers connect at random moments:
	// each watcher must see every event after its since exactly once, in
	// order, across the seam between backlog and live.
	const writers, cycles = 4, 40
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range cycles {
				l, _, err := e.engine.Acquire(e.ctx, areq(fmt.Sprintf("live/%d", w), "a", dlm.Exclusive))
				if err != nil {
					t.Errorf("acquire: %v", err)
					return
				}
				if _, err := e.engine.Release(e.ctx, tenant, l.ID); err != nil {
					t.Errorf("release: %v", err)
					return
				}
			}
		}()
	}
	type watch struct {
		w     *engine.Watcher
		since int64
	}
	var watches []watch
	for i := range 4 {
		since := int64(i * 3)
		w, err := e.engine.Watch(e.ctx, engine.EventQuery{Tenant: tenant, Since: since}, true)
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		watches = append(watches, watch{w, since})
		time.Sleep(time.Duration(i) * 5 * time.Millisecond) // connect at different moments of the write load
	}
	wg.Wait()
	all := e.history(engine.EventQuery{Tenant: tenant})
	for _, wt := range watches {
		var want []int64
		for _, ev := range all {
			if ev.ID > wt.since {
				want = append(want, ev.ID)
			}
		}
		var got []int64
		for _, ev := range collect(t, e.ctx, wt.w, len(want)) {
			got = append(got, ev.ID)
		}
		if diff := cmp.Diff(got, want); diff != "" {
			t.Errorf("watch since %d (-got +want):\n%s", wt.since, diff)
		}
	}
}

func testWatchLiveOnlyAndFilter(t *testing.T, open suite) {
	e := newEnv(t, open, engine.Options{})
	e.acquire(areq("w/old", "a", dlm.Exclusive))
	w, err := e.engine.Watch(e.ctx, engine.EventQuery{Tenant: tenant, Prefix: "w/"}, false)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	e.acquire(areq("x/other", "a", dlm.Exclusive))
	l := e.acquire(areq("w/new", "a", dlm.Exclusive))
	got := collect(t, e.ctx, w, 1)
	if got[0].Key.Name != "w/new" || got[0].Token != l.Token || got[0].Type != dlm.EventAcquired {
		t.Errorf("first live event = %+v, want w/new acquired", got[0])
	}
}

func testWatchResume(t *testing.T, open suite) {
	e := newEnv(t, open, engine.Options{})
	w, err := e.engine.Watch(e.ctx, engine.EventQuery{Tenant: tenant, Name: "r"}, false)
	if err != nil {
		t.Fatal(err)
	}
	e.release(e.acquire(areq("r", "a", dlm.Exclusive)))
	first := collect(t, e.ctx, w, 1)
	w.Close() // the client disconnects ...
	e.release(e.acquire(areq("r", "b", dlm.Exclusive)))
	// ... and resumes from the last ID it saw.
	w, err = e.engine.Watch(e.ctx, engine.EventQuery{Tenant: tenant, Name: "r", Since: first[0].ID}, true)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	got := summarize(collect(t, e.ctx, w, 3))
	a, b := first[0].Token, got[1].Token
	if b <= a {
		t.Errorf("b's token %d, not above a's %d", b, a)
	}
	want := []seen{{"released", "r", "a", "exclusive", a}, {"acquired", "r", "b", "exclusive", b}, {"released", "r", "b", "exclusive", b}}
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("resumed events (-got +want):\n%s", diff)
	}
}

func testSlowWatcherIsDropped(t *testing.T, open suite) {
	const buffer = 64
	e := newEnv(t, open, engine.Options{WatchBuffer: buffer})
	slow, err := e.engine.Watch(e.ctx, engine.EventQuery{Tenant: tenant}, false)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	fast, err := e.engine.Watch(e.ctx, engine.EventQuery{Tenant: tenant}, false)
	if err != nil {
		t.Fatal(err)
	}
	defer fast.Close()
	n := buffer + 10 // cycles, two events each: more than the slow one may miss
	var read atomic.Int64
	progress := make(chan struct{}, 1)
	fastDone := make(chan int, 1)
	go func() {
		// A watcher that keeps reading gets every event; once it has them
		// all, the feed has offered each one to the slow watcher too.
		ctx, cancel := context.WithTimeout(e.ctx, 20*time.Second)
		defer cancel()
		got := 0
		for ; got < 2*n; got++ {
			if _, err := fast.Next(ctx); err != nil {
				t.Logf("the reading watcher: %v", err)
				break
			}
			read.Add(1)
			select {
			case progress <- struct{}{}:
			default:
			}
		}
		fastDone <- got
	}()
	// The slow watcher never reads. The lock path keeps its pace, eight
	// cycles at a time; between rounds it lets the reading watcher catch up,
	// so that only the slow one can fall behind, however the goroutines are
	// scheduled.
	for start := 0; start < n; start += 8 {
		var wg sync.WaitGroup
		for i := start; i < min(start+8, n); i++ {
			wg.Go(func() {
				l, _, err := e.engine.Acquire(e.ctx, areq(fmt.Sprint("slow/", i), "a", dlm.Exclusive))
				if err == nil {
					_, err = e.engine.Release(e.ctx, tenant, l.ID)
				}
				if err != nil {
					t.Errorf("cycle %d: %v", i, err)
				}
			})
		}
		wg.Wait()
		for read.Load() < int64(2*min(start+8, n)) {
			select {
			case <-progress:
			case got := <-fastDone:
				t.Fatalf("the reading watcher stopped after %d of %d events", got, 2*n)
			}
		}
	}
	if got := <-fastDone; got != 2*n {
		t.Fatalf("the reading watcher got %d of %d events", got, 2*n)
	}
	ctx, cancel := context.WithTimeout(e.ctx, 20*time.Second)
	defer cancel()
	for {
		_, err := slow.Next(ctx)
		if errors.Is(err, dlm.ErrSlowConsumer) && !errors.Is(err, dlm.ErrUnavailable) {
			return
		}
		if err != nil {
			t.Fatalf("slow watcher ended with %v, want the code slow_consumer", err)
		}
	}
}

// testWatcherCatchesUpAfterBurst: a burst larger than a watcher's buffer,
// but not twice as large, does not drop it; it reads the overflow from the
// log and then goes on live, every event once and in order.
func testWatcherCatchesUpAfterBurst(t *testing.T, open suite) {
	const buffer = 8
	e := newEnv(t, open, engine.Options{WatchBuffer: buffer})
	w, err := e.engine.Watch(e.ctx, engine.EventQuery{Tenant: tenant}, false)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	var want []int64
	cycles := func(n int) {
		for i := range n {
			l := e.acquire(areq(fmt.Sprint("burst/", i), "a", dlm.Exclusive))
			e.release(l)
		}
		events, _, err := e.engine.Events(e.ctx, engine.EventQuery{Tenant: tenant, Since: last(want), Limit: engine.MaxEventLimit})
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range events {
			want = append(want, ev.ID)
		}
	}
	read := func(n int) (got []int64) {
		ctx, cancel := context.WithTimeout(e.ctx, 20*time.Second)
		defer cancel()
		for range n {
			ev, err := w.Next(ctx)
			if err != nil {
				t.Fatalf("after %d events: %v", len(got), err)
			}
			got = append(got, ev.ID)
		}
		return got
	}
	cycles(6) // 12 events, unread: the buffer overflows by 4
	got := read(len(want))
	cycles(3) // and live again
	got = append(got, read(len(want)-len(got))...)
	if !slices.Equal(got, want) {
		t.Errorf("watched %v, want %v", got, want)
	}
}

func last(ids []int64) int64 {
	if len(ids) == 0 {
		return 0
	}
	return ids[len(ids)-1]
}
