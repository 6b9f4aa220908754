package postgres_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/dlmtest"
	"github.com/dlmhq/dlm/postgres"
	"github.com/jackc/pgx/v5"
)

// These tests drive Load and Commit directly, as the engine does: load a
// Need, decide on the LockStates in memory, commit the saves.

// grant loads key, acquires it for holder and commits: the lease.
func grant(t testing.TB, s *postgres.Store, key dlm.Key, holder, idem string) dlm.Lease {
	t.Helper()
	need := &dlm.Need{Keys: []dlm.Key{key}, Tenants: []string{key.Namespace}}
	if idem != "" {
		need.Idempotency = []dlm.IdempotencyKey{{Tenant: key.Namespace, Key: idem}}
	}
	b, err := s.Load(t.Context(), need)
	if err != nil {
		t.Fatalf("load %v: %v", key, err)
	}
	var c dlm.Change
	st := b.Lock(key)
	out, l, _, err := st.Acquire(b.Now(), acquireOf(key, holder, idem), &c)
	if err != nil || out != dlm.Granted {
		b.Abort()
		t.Fatalf("acquire of %v: outcome %v, %v", key, out, err)
	}
	if err := b.Commit(t.Context(), []dlm.Save{{State: st, Change: &c}}); err != nil {
		t.Fatalf("commit: %v", err)
	}
	return l
}

func acquireOf(key dlm.Key, holder, idem string) dlm.Request {
	return dlm.Request{ID: fmt.Sprint("l", rand.Uint64()), Tenant: key.Namespace, Key: key, Mode: dlm.Exclusive,
		HolderID: holder, TTL: time.Minute, IdempotencyKey: idem}
}

func TestLoadCommit(t *testing.T) {
	url, schema := freshSchema(t)
	s := open(t, url, schema, postgres.Options{})
	ctx := t.Context()
	key := ckey("a")

	b, err := s.Load(ctx, &dlm.Need{Keys: []dlm.Key{key}, Tenants: []string{ctenant}})
	if err != nil {
		t.Fatal(err)
	}
	if st := b.Lock(key); st == nil || st.Token != 0 || len(st.Holders) != 0 {
		t.Fatalf("a lock never used: %+v", st)
	}
	if b.Lock(ckey("other")) != nil {
		t.Error("a key not in the Need is loaded")
	}
	if l, w := b.Usage(ctenant); l != 0 || w != 0 {
		t.Errorf("usage of a new tenant: %d leases, %d waiters", l, w)
	}
	if now := b.Now(); now.IsZero() || now.Location() != time.UTC {
		t.Errorf("Now = %v, want the database's time in UTC", now)
	}
	b.Abort()

	l := grant(t, s, key, "h", "k1")

	// The lease finds its lock, loaded and locked, without naming it.
	b, err = s.Load(ctx, &dlm.Need{Leases: []string{l.ID, "unknown"}, Tenants: []string{ctenant},
		Idempotency: []dlm.IdempotencyKey{{Tenant: ctenant, Key: "k1"}, {Tenant: ctenant, Key: "k2"}}})
	if err != nil {
		t.Fatal(err)
	}
	live, ended := b.Lease(l.ID)
	if live == nil || ended != nil || live.Token != l.Token || live.IdempotencyKey != "k1" {
		t.Fatalf("lease after grant: %+v, %+v", live, ended)
	}
	if live, ended := b.Lease("unknown"); live != nil || ended != nil {
		t.Errorf("unknown lease: %+v, %+v", live, ended)
	}
	if k, ok := b.Idempotent(dlm.IdempotencyKey{Tenant: ctenant, Key: "k1"}); !ok || k != key {
		t.Errorf("idempotency key k1: %v, %v", k, ok)
	}
	if _, ok := b.Idempotent(dlm.IdempotencyKey{Tenant: ctenant, Key: "k2"}); ok {
		t.Error("idempotency key k2 found")
	}
	if n, _ := b.Usage(ctenant); n != 1 {
		t.Errorf("usage after a grant: %d leases", n)
	}
	st := b.Lock(key)
	if st == nil || st.Token != l.Token || len(st.Holders) != 1 {
		t.Fatalf("the lease's lock: %+v", st)
	}
	var c dlm.Change
	if _, ok := st.Release(b.Now(), l.ID, &c); !ok {
		t.Fatal("release found no lease")
	}
	if err := b.Commit(ctx, []dlm.Save{{State: st, Change: &c}}); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(ctx, nil); dlm.ErrorCode(err) != dlm.CodeUnavailable {
		t.Errorf("a second commit: %v, want unavailable", err)
	}

	b, err = s.Load(ctx, &dlm.Need{Leases: []string{l.ID}, Tenants: []string{ctenant}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Abort()
	if live, ended := b.Lease(l.ID); live != nil || ended == nil || ended.Reason != dlm.Released {
		t.Errorf("lease after release: %+v, %+v", live, ended)
	}
	if n, _ := b.Usage(ctenant); n != 0 {
		t.Errorf("usage after release: %d leases", n)
	}
	if b.Lock(key) != nil {
		t.Error("the lock of an ended lease is loaded")
	}

	// Both commits' events, numbered in order.
	var events []dlm.Event
	if err := s.View(ctx, func(tx dlm.ReadTx) error {
		var err error
		events, err = tx.Events(ctx, dlm.EventFilter{})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if len(events) != 2 || events[0].Type != dlm.EventAcquired || events[1].Type != dlm.EventReleased || events[1].ID <= events[0].ID {
		t.Errorf("events: %+v", events)
	}
}

// waitingForLock reports whether backend pid waits for a lock (a row lock
// or an advisory lock).
func waitingForLock(t testing.TB, admin *pgx.Conn, pid uint32) bool {
	var n int
	err := admin.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
		WHERE wait_event_type = 'Lock' AND pid = $1`, pid).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	return n > 0
}

// TestOverlappingBatchesTakeTurns: a batch whose Need overlaps one loaded
// waits in Load until that one commits, and then sees its writes: locks
// by their rows, idempotency keys across locks by their advisory locks.
func TestOverlappingBatchesTakeTurns(t *testing.T) {
	url, schema := freshSchema(t)
	var opts postgres.Options
	pids := make(chan uint32, 2)
	postgres.BeforeLoad(&opts, func(pid uint32, keys []dlm.Key) { pids <- pid })
	s := open(t, url, schema, opts)
	admin := adminConn(t, url)
	ctx := t.Context()
	idem := dlm.IdempotencyKey{Tenant: ctenant, Key: "k"}
	for _, tc := range []struct {
		name          string
		first, second dlm.Need
	}{
		{"lock", dlm.Need{Keys: []dlm.Key{ckey("a"), ckey("b")}}, dlm.Need{Keys: []dlm.Key{ckey("c"), ckey("b")}}},
		{"idempotency key", dlm.Need{Keys: []dlm.Key{ckey("x")}, Idempotency: []dlm.IdempotencyKey{idem}},
			dlm.Need{Keys: []dlm.Key{ckey("y")}, Idempotency: []dlm.IdempotencyKey{idem}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := s.Load(ctx, &tc.first)
			if err != nil {
				t.Fatal(err)
			}
			<-pids
			key, ik := tc.first.Keys[0], idem.Key
			if tc.name == "lock" {
				key, ik = ckey("b"), ""
			}
			st := a.Lock(key)
			var c dlm.Change
			if out, _, _, err := st.Acquire(a.Now(), acquireOf(key, "first", ik), &c); err != nil || out != dlm.Granted {
				t.Fatalf("acquire: %v, %v", out, err)
			}
			type loaded struct {
				b   dlm.Batch
				err error
			}
			second := make(chan loaded, 1)
			go func() {
				b, err := s.Load(ctx, &tc.second)
				second <- loaded{b, err}
			}()
			pid := <-pids
			dlmtest.Eventually(t, "the second Load waits for a lock", func() bool { return waitingForLock(t, admin, pid) })
			select {
			case r := <-second:
				t.Fatalf("the second Load returned while the first batch holds its locks: %v", r.err)
			default:
			}
			if err := a.Commit(ctx, []dlm.Save{{State: st, Change: &c}}); err != nil {
				t.Fatal(err)
			}
			r := <-second
			if r.err != nil {
				t.Fatal(r.err)
			}
			defer r.b.Abort()
			if tc.name == "lock" {
				if st := r.b.Lock(key); st == nil || len(st.Holders) != 1 || st.Holders[0].HolderID != "first" {
					t.Errorf("the second batch sees %+v", st)
				}
			} else if k, ok := r.b.Idempotent(idem); !ok || k != key {
				t.Errorf("the second batch finds the idempotency key on %v, %v; want %v", k, ok, key)
			}
		})
	}
}

// TestBatchesNeverDeadlock: concurrent batches that load overlapping sets
// of locks, named in any order, with idempotency keys they share, take
// turns: none fails (PostgreSQL would end one of a deadlock with an error),
// and every grant is kept.
func TestBatchesNeverDeadlock(t *testing.T) {
	url, schema := freshSchema(t)
	stores := []*postgres.Store{
		open(t, url, schema, postgres.Options{MaxConns: 8}),
		open(t, url, schema, postgres.Options{MaxConns: 8}),
	}
	const workers, rounds, names = 8, 30, 6
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		grants = map[dlm.Key]int64{}
	)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := stores[w%len(stores)]
			for i := range rounds {
				var need dlm.Need
				for _, n := range rand.Perm(names)[:3] {
					need.Keys = append(need.Keys, ckey(fmt.Sprint("n", n)))
				}
				need.Idempotency = []dlm.IdempotencyKey{{Tenant: ctenant, Key: fmt.Sprint("k", rand.N(3))}, {Tenant: ctenant, Key: fmt.Sprint("k", rand.N(3))}}
				need.Tenants = []string{ctenant}
				b, err := s.Load(t.Context(), &need)
				if err != nil {
					t.Errorf("worker %d round %d: load: %v", w, i, err)
					return
				}
				var saves []dlm.Save
				for _, k := range need.Keys {
					st := b.Lock(k)
					var c dlm.Change
					st.Expire(b.Now(), &c)
					for _, h := range st.Holders {
						st.Release(b.Now(), h.ID, &c)
					}
					if out, _, _, err := st.Acquire(b.Now(), acquireOf(k, "w", ""), &c); err != nil || out != dlm.Granted {
						t.Errorf("acquire of %v: %v, %v", k, out, err)
					}
					saves = append(saves, dlm.Save{State: st, Change: &c})
				}
				if err := b.Commit(t.Context(), saves); err != nil {
					t.Errorf("worker %d round %d: commit: %v", w, i, err)
					return
				}
				mu.Lock()
				for _, sv := range saves {
					grants[sv.State.Key]++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	// Every grant released the one before it: the token counts them.
	b, err := stores[0].Load(t.Context(), &dlm.Need{Keys: func() (ks []dlm.Key) {
		for k := range grants {
			ks = append(ks, k)
		}
		return ks
	}(), Tenants: []string{ctenant}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Abort()
	for k, n := range grants {
		if st := b.Lock(k); st.Token != n || len(st.Holders) != 1 {
			t.Errorf("%v: token %d and %d holders after %d grants", k, st.Token, len(st.Holders), n)
		}
	}
	if l, _ := b.Usage(ctenant); l != int64(len(grants)) {
		t.Errorf("usage: %d leases, want %d", l, len(grants))
	}
}
