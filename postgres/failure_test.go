package postgres_test

import (
	"context"
	neturl "net/url"
	"testing"
	"time"

	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/dlmtest"
	"github.com/dlmhq/dlm/engine"
	"github.com/dlmhq/dlm/postgres"
	"github.com/jackc/pgx/v5"
)

// TestWaitersOfDeadInstancesAreDropped: an instance that stops heartbeating
// (as a killed process does) loses its queued waiters, so that they are
// neither granted nor left blocking the queue, while its lease stays.
func TestWaitersOfDeadInstancesAreDropped(t *testing.T) {
	url, schema := freshSchema(t)
	ctx := t.Context()
	// "dead" heartbeats only when it opens, and never considers anyone gone
	// itself; "live" considers an instance gone 1s after its last heartbeat.
	dead := open(t, url, schema, postgres.Options{Heartbeat: time.Hour, DeadAfter: time.Hour})
	live := open(t, url, schema, postgres.Options{Heartbeat: 100 * time.Millisecond, DeadAfter: time.Second})
	ed := engine.New(dead, engine.Options{})
	t.Cleanup(ed.Close)
	el := engine.New(live, engine.Options{})
	t.Cleanup(el.Close)
	key := dlm.Key{Namespace: "t", Name: "q"}
	req := func(holder string, wait time.Duration) engine.AcquireRequest {
		return engine.AcquireRequest{Tenant: "t", Key: key, HolderID: holder, TTL: time.Minute, Wait: wait}
	}
	held, _, err := el.Acquire(ctx, req("holder", 0))
	if err != nil {
		t.Fatal(err)
	}
	deadsLease, _, err := ed.Acquire(ctx, engine.AcquireRequest{Tenant: "t", Key: dlm.Key{Namespace: "t", Name: "other"}, HolderID: "d", TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	parked := make(chan error, 1)
	go func() {
		_, _, err := ed.Acquire(ctx, req("ghost", 20*time.Second))
		parked <- err
	}()
	admin := adminConn(t, url)
	dlmtest.Eventually(t, "the ghost waiter queues", func() bool { return waiterRows(t, admin, schema) == 1 })
	// The live instance's sweeper drops the ghost's waiter on its own.
	dlmtest.Eventually(t, "the ghost waiter is dropped", func() bool {
		v, err := el.Inspect(ctx, key)
		return err == nil && len(v.Waiters) == 0 && waiterRows(t, admin, schema) == 0
	})
	// A waiter queued by the live instance now is served first.
	got := make(chan dlm.Lease, 1)
	go func() {
		l, _, err := el.Acquire(ctx, req("next", 20*time.Second))
		if err != nil {
			t.Errorf("live waiter: %v", err)
		}
		got <- l
	}()
	dlmtest.Eventually(t, "the live waiter queues", func() bool {
		v, err := el.Inspect(ctx, key)
		return err == nil && len(v.Waiters) == 1
	})
	if _, err := el.Release(ctx, "t", held.ID); err != nil {
		t.Fatal(err)
	}
	if l := <-got; l.HolderID != "next" || !dlmtest.NextToken(held.Token, l.Token) {
		t.Errorf("after release the lock went to %s with token %d", l.HolderID, l.Token)
	}
	if _, err := el.Lease(ctx, "t", deadsLease.ID); err != nil {
		t.Errorf("the dead instance's lease is gone: %v", err)
	}
	ed.Close() // the parked ghost gives up
	<-parked
}

func waiterRows(t testing.TB, admin *pgx.Conn, schema string) int {
	t.Helper()
	var n int
	if err := admin.QueryRow(context.Background(), `SELECT count(*) FROM `+schema+`.waiters`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestConnectionLoss: when the server drops every connection of the store,
// calls fail with unavailable, quickly, and the store recovers by itself.
func TestConnectionLoss(t *testing.T) {
	url, schema := freshSchema(t)
	ctx := t.Context()
	// Name this store's connections, so that only they are dropped: other
	// tests may be using the server.
	u, err := neturl.Parse(url)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("application_name", schema)
	u.RawQuery = q.Encode()
	s := open(t, u.String(), schema, postgres.Options{})
	e := engine.New(s, engine.Options{})
	t.Cleanup(e.Close)
	key := dlm.Key{Namespace: "t", Name: "c"}
	l, _, err := e.Acquire(ctx, engine.AcquireRequest{Tenant: "t", Key: key, HolderID: "h", TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	admin := adminConn(t, url)
	if _, err := admin.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE application_name = $1 AND pid <> pg_backend_pid()`, schema); err != nil {
		t.Fatal(err)
	}
	failures := 0
	dlmtest.Eventually(t, "the store works again", func() bool {
		start := time.Now()
		_, err := e.Renew(ctx, "t", l.ID, 0)
		if took := time.Since(start); took > 5*time.Second {
			t.Errorf("a call took %v", took)
		}
		if err != nil {
			if c := dlm.ErrorCode(err); c != dlm.CodeUnavailable {
				t.Fatalf("renew during connection loss: %v, want unavailable", err)
			}
			failures++
		}
		return err == nil
	})
	t.Logf("%d calls failed before recovery", failures)
	if v, err := e.Inspect(ctx, key); err != nil || len(v.Holders) != 1 || v.Holders[0].Token != l.Token {
		t.Errorf("after recovery: %+v, %v", v, err)
	}
}

// TestOpenUnreachable: Open fails fast when nothing listens.
func TestOpenUnreachable(t *testing.T) {
	dlmtest.PostgresURL(t)
	start := time.Now()
	_, err := postgres.Open(t.Context(), "postgres://postgres@127.0.0.1:1/postgres?sslmode=disable", postgres.Options{})
	if err == nil {
		t.Fatal("Open succeeded with nothing listening")
	}
	if dlm.ErrorCode(err) != dlm.CodeUnavailable {
		t.Errorf("Open: %v, want unavailable", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("Open took %v to fail", took)
	}
}
