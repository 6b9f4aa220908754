package sqlite_test

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/sqlite"
	"github.com/dlmhq/dlm/storetest"
)

func TestStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) func(dlm.Clock) dlm.Store {
		path := filepath.Join(t.TempDir(), "dlm.db")
		return func(clock dlm.Clock) dlm.Store {
			s, err := sqlite.OpenWith(path, sqlite.Options{Clock: clock})
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
	}, true)
}

func TestOpenLocksTheFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dlm.db")
	s, err := sqlite.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sqlite.Open(path); err == nil {
		t.Fatal("a second Open of the same file succeeded")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = sqlite.Open(path)
	if err != nil {
		t.Fatalf("reopen after Close: %v", err)
	}
	s.Close()
}

// TestLoadCommit drives the batch contract directly: what Load answers
// from memory, that Commit numbers events in save order, that an aborted
// batch leaves nothing behind, and that reads and a reopened store see
// what was committed.
func TestLoadCommit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dlm.db")
	s, err := sqlite.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	a, b := dlm.Key{Namespace: "t", Name: "a"}, dlm.Key{Namespace: "t", Name: "b"}

	// One batch: acquire a (with an idempotency key) and b, then renew a.
	batch, err := s.Load(ctx, &dlm.Need{Keys: []dlm.Key{a, b}})
	if err != nil {
		t.Fatal(err)
	}
	now := batch.Now()
	sa, sb := batch.Lock(a), batch.Lock(b)
	var ca, cb, cr dlm.Change
	_, la, _, err := sa.Acquire(now, dlm.Request{ID: "la", Tenant: "t", Key: a, Mode: dlm.Exclusive, HolderID: "h", TTL: time.Hour, IdempotencyKey: "ia"}, &ca)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := sb.Acquire(now, dlm.Request{ID: "lb", Tenant: "t", Key: b, Mode: dlm.Shared, HolderID: "h", TTL: time.Hour}, &cb); err != nil {
		t.Fatal(err)
	}
	if _, ok := sa.Renew(now, "la", 2*time.Hour, &cr); !ok {
		t.Fatal("renew failed")
	}
	saves := []dlm.Save{{State: sa, Change: &ca}, {State: sb, Change: &cb}, {State: sa, Change: &cr}}
	if err := batch.Commit(ctx, saves); err != nil {
		t.Fatal(err)
	}
	var ids []int64
	for _, sv := range saves {
		for _, e := range sv.Change.Events {
			ids = append(ids, e.ID)
		}
	}
	if len(ids) != 3 || ids[0] != 1 || ids[1] != 2 || ids[2] != 3 {
		t.Errorf("event IDs %v, want [1 2 3] in save order", ids)
	}

	// What the next Load answers, and an aborted decision.
	batch, err = s.Load(ctx, &dlm.Need{Leases: []string{"la", "nope"}, Idempotency: []dlm.IdempotencyKey{{Tenant: "t", Key: "ia"}}, Tenants: []string{"t"}})
	if err != nil {
		t.Fatal(err)
	}
	if l, e := batch.Lease("la"); l == nil || e != nil || l.TTL != 2*time.Hour || l.Token != la.Token {
		t.Errorf("Lease(la) = %+v, %+v; want it live, renewed to 2h", l, e)
	}
	if l, e := batch.Lease("nope"); l != nil || e != nil {
		t.Errorf("Lease(nope) = %+v, %+v; want neither", l, e)
	}
	if st := batch.Lock(b); st != nil {
		t.Errorf("Lock(b) = %+v; want nil, b was not loaded", st)
	}
	if k, ok := batch.Idempotent(dlm.IdempotencyKey{Tenant: "t", Key: "ia"}); !ok || k != a {
		t.Errorf("Idempotent(ia) = %v, %v; want %v", k, ok, a)
	}
	if leases, waiters := batch.Usage("t"); leases != 2 || waiters != 0 {
		t.Errorf("Usage(t) = %d, %d; want 2, 0", leases, waiters)
	}
	var c dlm.Change
	if _, ok := batch.Lock(a).Release(batch.Now(), "la", &c); !ok {
		t.Fatal("release in the aborted batch failed")
	}
	batch.Abort()
	if err := release(ctx, s, la); err != nil {
		t.Fatalf("release after the abort: %v", err)
	}

	batch, err = s.Load(ctx, &dlm.Need{Keys: []dlm.Key{a}, Leases: []string{"la"}})
	if err != nil {
		t.Fatal(err)
	}
	if l, e := batch.Lease("la"); l != nil || e == nil || e.Reason != dlm.Released {
		t.Errorf("Lease(la) after release = %+v, %+v; want it ended", l, e)
	}
	if st := batch.Lock(a); len(st.Holders) != 0 || st.Token != la.Token {
		t.Errorf("Lock(a) after release = %+v; want no holders, token %d", st, la.Token)
	}
	batch.Abort()
	checkHeld(t, s, []dlm.Lease{{ID: "lb", Key: b, Token: 1}}, la)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// Reopened, a's token comes from the file, and the next grant's is above it.
	if s, err = sqlite.Open(path); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	again, err := acquire(ctx, s, "a", "h")
	if err != nil || again.Token <= la.Token {
		t.Errorf("acquire after reopening = %+v, %v; want a token above %d", again, err, la.Token)
	}
}

// TestObserveCommits checks that every committed batch is observed once,
// with its saves and a time that covers its commit.
func TestObserveCommits(t *testing.T) {
	s, err := sqlite.Open(filepath.Join(t.TempDir(), "dlm.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var ops, batches, zero int
	s.ObserveCommits(func(n int, d time.Duration) {
		ops += n
		batches++
		if d <= 0 {
			zero++
		}
	})
	const n = 10
	for i := range n {
		if _, err := acquire(t.Context(), s, fmt.Sprint("o", i), "h"); err != nil {
			t.Fatal(err)
		}
	}
	s.ObserveCommits(nil)
	if _, err := acquire(t.Context(), s, "unobserved", "h"); err != nil {
		t.Fatal(err)
	}
	if ops != n || batches != n || zero > 0 {
		t.Errorf("observed %d saves in %d batches (%d of them without time), want %d in %d", ops, batches, zero, n, n)
	}
}
