package postgres_test

import (
	"fmt"
	"testing"

	"github.com/dlmhq/dlm"
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
