package postgres_test

import (
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/dlmtest"
	"github.com/dlmhq/dlm/engine"
	"github.com/dlmhq/dlm/postgres"
)

// TestConnectionCutWhileLoading cuts the connection of a group at the
// moment the round that loads its locks is sent, as a PostgreSQL restart
// does to whatever is in flight. The group holds several operations on each
// of two locks: one per lock asks for it, the others wait in the group to
// use it next. Every one of them fails with unavailable, none is granted,
// and the store goes on by itself: the next operations on the same locks
// succeed, and the lease granted just before is still held.
//
// The group is put together behind a gate: the round of an acquire of
// "gate" is held back until the operations to cut are all queued, so that
// they start together, as one group, once it goes on. The engine's sweeper
// may have one Update queued among them, which leaves at least five of the
// six in the group, and waiters for "a" among them: every round that loads
// "a" or "b" is cut until all six have answered, so that one left for the
// next group fails the same way.
func TestConnectionCutWhileLoading(t *testing.T) {
	url, schema := freshSchema(t)
	ctx := t.Context()
	killer := adminConn(t, url)
	var (
		gated, gateOnce = make(chan struct{}), sync.Once{}
		gateOpen        = make(chan struct{})
		openGate        = sync.OnceFunc(func() { close(gateOpen) })
		mu              sync.Mutex // guards killer and the two below
		cutting         = true
		cuts            []error // one per cut: nil if the backend was terminated
	)
	var opts postgres.Options
	postgres.BeforeLoad(&opts, func(pid uint32, keys []dlm.Key) {
		if slices.Contains(keys, ckey("gate")) {
			gateOnce.Do(func() {
				close(gated)
				<-gateOpen
			})
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if !cutting || !slices.ContainsFunc(keys, func(k dlm.Key) bool { return k == ckey("a") || k == ckey("b") }) {
			return
		}
		// Wait until the backend is gone, so that the round is sent to a
		// dead connection, not raced with its end.
		var ok bool
		err := killer.QueryRow(ctx, `SELECT pg_terminate_backend($1, 10000)`, pid).Scan(&ok)
		if err == nil && !ok {
			err = fmt.Errorf("backend %d was not terminated", pid)
		}
		cuts = append(cuts, err)
	})
	s := open(t, url, schema, opts)
	e := engine.New(s, engine.Options{})
	t.Cleanup(e.Close)
	t.Cleanup(openGate) // first, if the test ends early: the committer waits on it

	type result struct {
		lease dlm.Lease
		err   error
	}
	acquire := func(name, holder string, out chan<- result) {
		l, _, err := e.Acquire(ctx, creq(name, holder, dlm.Exclusive, 0))
		out <- result{l, err}
	}
	gate := make(chan result, 1)
	go acquire("gate", "g", gate)
	<-gated
	// Four operations on "a" and two on "b", all queued behind the gate.
	names := []string{"a", "a", "a", "a", "b", "b"}
	cutOff := make(chan result, len(names))
	for i, name := range names {
		go acquire(name, fmt.Sprint("c", i), cutOff)
	}
	dlmtest.Eventually(t, "the operations queue behind the gate", func() bool {
		return postgres.QueuedUpdates(s) >= len(names)
	})
	openGate()

	g := <-gate
	if g.err != nil {
		t.Fatalf("acquire of the gate: %v", g.err)
	}
	for range names {
		r := <-cutOff
		if code := dlm.ErrorCode(r.err); code != dlm.CodeUnavailable {
			t.Errorf("an operation of the cut group: lease %+v, err %v; want unavailable", r.lease, r.err)
		}
	}
	mu.Lock()
	cutting = false
	if len(cuts) == 0 {
		t.Error("no round that loads a or b was sent")
	}
	for _, err := range cuts {
		if err != nil {
			t.Errorf("cutting the connection: %v", err)
		}
	}
	mu.Unlock()

	// The store recovers by itself: nothing of the cut group was kept.
	for _, name := range []string{"a", "b"} {
		l, _, err := e.Acquire(ctx, creq(name, "after", dlm.Exclusive, 0))
		if err != nil {
			t.Fatalf("acquire of %s after the cut: %v", name, err)
		}
		v, err := e.Inspect(ctx, ckey(name))
		if err != nil || len(v.Holders) != 1 || v.Holders[0].HolderID != "after" || l.Token < 1 {
			t.Errorf("%s after the cut: token %d, view %+v, %v; want only the new lease, on a fresh lock's token", name, l.Token, v, err)
		}
	}
	if _, err := e.Release(ctx, ctenant, g.lease.ID); err != nil {
		t.Errorf("release of the gate after the cut: %v", err)
	}
}
