package postgres_test

import (
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/engine"
	"github.com/dlmhq/dlm/postgres"
)

// TestConnectionCut cuts a batch's connection as a PostgreSQL restart does
// to whatever is in flight: at the moment Load sends its round trip, and
// between Load and Commit. Each fails with unavailable, nothing of the cut
// batch is kept, and the store goes on by itself on fresh connections: the
// next batch on the same lock succeeds and the lease granted before is
// still held.
func TestConnectionCut(t *testing.T) {
	url, schema := freshSchema(t)
	ctx := t.Context()
	killer := adminConn(t, url)
	var (
		cutNext bool
		lastPID uint32
	)
	cut := func(pid uint32) {
		// Wait until the backend is gone, so that the round trip goes to
		// a dead connection, not raced with its end.
		var ok bool
		err := killer.QueryRow(ctx, `SELECT pg_terminate_backend($1, 10000)`, pid).Scan(&ok)
		if err != nil || !ok {
			t.Fatalf("terminating backend %d: %v, %v", pid, ok, err)
		}
	}
	var opts postgres.Options
	postgres.BeforeLoad(&opts, func(pid uint32, keys []dlm.Key) {
		lastPID = pid
		if cutNext {
			cutNext = false
			cut(pid)
		}
	})
	s := open(t, url, schema, opts)
	held := grant(t, s, ckey("held"), "h", "")
	key := ckey("a")
	need := func() *dlm.Need { return &dlm.Need{Keys: []dlm.Key{key}, Leases: []string{held.ID}} }

	cutNext = true
	if b, err := s.Load(ctx, need()); dlm.ErrorCode(err) != dlm.CodeUnavailable {
		if b != nil {
			b.Abort()
		}
		t.Fatalf("Load on a cut connection: %v, want unavailable", err)
	}

	b, err := s.Load(ctx, need())
	if err != nil {
		t.Fatalf("Load after the cut: %v", err)
	}
	st := b.Lock(key)
	var c dlm.Change
	if out, _, _, err := st.Acquire(b.Now(), acquireOf(key, "cut", ""), &c); err != nil || out != dlm.Granted {
		t.Fatalf("acquire: %v, %v", out, err)
	}
	cut(lastPID)
	if err := b.Commit(ctx, []dlm.Save{{State: st, Change: &c}}); dlm.ErrorCode(err) != dlm.CodeUnavailable {
		t.Fatalf("Commit on a cut connection: %v, want unavailable", err)
	}

	for i := range 3 { // more than one connection of the pool: none is dead
		b, err := s.Load(ctx, need())
		if err != nil {
			t.Fatalf("Load %d after the cuts: %v", i, err)
		}
		st := b.Lock(key)
		live, _ := b.Lease(held.ID)
		b.Abort()
		if st == nil || st.Token != 0 || len(st.Holders) != 0 {
			t.Errorf("after the cuts %v is %+v: want it never used", key, st)
		}
		if live == nil || live.Token != held.Token {
			t.Errorf("the lease granted before the cuts: %+v", live)
		}
	}
	if l := grant(t, s, key, fmt.Sprint("after"), ""); l.Token != 1 {
		t.Errorf("the first grant after the cuts has token %d", l.Token)
	}
}

// TestConnectionCutUnderEngine: concurrent acquires of two locks through the
// engine, in whatever groups it forms, while every Load that names either
// lock has its connection cut. Every acquire fails with unavailable, none
// is granted, and once the cuts stop the next acquires succeed on the same
// locks, as never used, and the lease granted before is still held.
func TestConnectionCutUnderEngine(t *testing.T) {
	url, schema := freshSchema(t)
	ctx := t.Context()
	killer := adminConn(t, url)
	var (
		mu      sync.Mutex // guards killer and the two below
		cutting = true
		cuts    []error // one per cut: nil if the backend was terminated
	)
	var opts postgres.Options
	postgres.BeforeLoad(&opts, func(pid uint32, keys []dlm.Key) {
		mu.Lock()
		defer mu.Unlock()
		if !cutting || !slices.ContainsFunc(keys, func(k dlm.Key) bool { return k == ckey("a") || k == ckey("b") }) {
			return
		}
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
	held, _, err := e.Acquire(ctx, creq("held", "h", dlm.Exclusive, 0))
	if err != nil {
		t.Fatal(err)
	}

	names := []string{"a", "a", "a", "a", "b", "b"}
	errs := make(chan error, len(names))
	for i, name := range names {
		go func() {
			l, _, err := e.Acquire(ctx, creq(name, fmt.Sprint("c", i), dlm.Exclusive, 0))
			if err == nil {
				err = fmt.Errorf("granted %+v", l)
			}
			errs <- err
		}()
	}
	for range names {
		if err := <-errs; dlm.ErrorCode(err) != dlm.CodeUnavailable {
			t.Errorf("an acquire while its Loads are cut: %v; want unavailable", err)
		}
	}
	mu.Lock()
	cutting = false
	if len(cuts) == 0 {
		t.Error("no Load of a or b was cut")
	}
	for _, err := range cuts {
		if err != nil {
			t.Errorf("cutting the connection: %v", err)
		}
	}
	mu.Unlock()

	for _, name := range []string{"a", "b"} {
		l, _, err := e.Acquire(ctx, creq(name, "after", dlm.Exclusive, 0))
		if err != nil {
			t.Fatalf("acquire of %s after the cuts: %v", name, err)
		}
		v, err := e.Inspect(ctx, ckey(name))
		if err != nil || len(v.Holders) != 1 || v.Holders[0].HolderID != "after" || l.Token < 1 {
			t.Errorf("%s after the cuts: token %d, view %+v, %v; want only the new lease", name, l.Token, v, err)
		}
	}
	if _, err := e.Release(ctx, ctenant, held.ID); err != nil {
		t.Errorf("release of the lease granted before the cuts: %v", err)
	}
}
