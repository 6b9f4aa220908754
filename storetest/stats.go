package storetest

import (
	"context"
	"testing"
	"time"

	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/engine"
	"github.com/google/go-cmp/cmp"
)

// stats reads the store's Stats directly, past the engine's cache.
func (e *env) stats() dlm.Stats {
	e.t.Helper()
	var st dlm.Stats
	err := e.store.View(e.ctx, func(tx dlm.ReadTx) error {
		var err error
		st, err = tx.Stats(e.ctx)
		return err
	})
	if err != nil {
		e.t.Fatalf("stats: %v", err)
	}
	return st
}

func testStats(t *testing.T, open suite) {
	e := newClockedEnv(t, open, engine.Options{})
	if got := e.stats(); got != (dlm.Stats{}) {
		t.Fatalf("empty store: stats = %+v, want zero", got)
	}
	e.acquire(areq("x1", "a", dlm.Exclusive))
	e.acquire(areq("x2", "a", dlm.Exclusive))
	g := areq("g", "a", dlm.Exclusive)
	g.Key.Namespace = dlm.GlobalNamespace
	e.acquire(g) // counted too: Stats spans every namespace
	for _, h := range []string{"a", "b", "c"} {
		e.acquire(areq("s", h, dlm.Shared))
	}
	released := e.acquire(areq("r", "a", dlm.Shared))
	e.release(released)
	short := areq("short", "a", dlm.Exclusive)
	short.TTL = 100 * time.Millisecond
	sl := e.acquire(short)

	// An exclusive waiter behind the shared holders, and a shared one
	// behind it (FIFO keeps it from joining the holders).
	ctx, cancel := context.WithCancel(e.ctx)
	defer cancel()
	for i, m := range []dlm.Mode{dlm.Exclusive, dlm.Shared} {
		r := areq("s", "w", m)
		r.Wait = time.Minute
		e.waitFor(ctx, r)
		e.waitQueued("s", i+1)
	}

	want := dlm.Stats{
		Leases:  dlm.ModeCounts{Exclusive: 3, Shared: 3},
		Waiters: dlm.ModeCounts{Exclusive: 1, Shared: 1},
	}
	// The short lease stops counting at its expiry, swept or not.
	e.pass(short.TTL, "the short lease expired", func() bool {
		_, err := e.engine.Lease(e.ctx, tenant, sl.ID)
		return err != nil
	})
	got := e.stats()
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("stats (-got +want):\n%s", diff)
	}
}
