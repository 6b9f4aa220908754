package postgres_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/dlmtest"
	"github.com/dlmhq/dlm/engine"
	"github.com/dlmhq/dlm/postgres"
)

// TestEventsHaveNoGaps is the property that makes tailing the log safe:
// while writers on several instances commit events concurrently, a reader
// polling Events(since) sees every ID exactly once, in order, and never an ID
// below one it has already read. (Nothing here rolls back, so ids are dense.)
func TestEventsHaveNoGaps(t *testing.T) {
	url, schema := freshSchema(t)
	ctx := t.Context()
	var engines []*engine.Engine
	for range 2 {
		s := open(t, url, schema, postgres.Options{MaxConns: 8})
		e := engine.New(s, engine.Options{})
		t.Cleanup(e.Close)
		engines = append(engines, e)
	}
	reader := open(t, url, schema, postgres.Options{MaxConns: 2})

	var (
		written atomic.Int64 // events the writers' operations produced
		wg      sync.WaitGroup
		stop    = make(chan struct{})
	)
	for c := range 24 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e := engines[c%len(engines)]
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				name := fmt.Sprintf("n/%d", (c*31+i)%40)
				l, _, err := e.Acquire(ctx, engine.AcquireRequest{Tenant: "t", Key: dlm.Key{Namespace: "t", Name: name}, HolderID: "h", TTL: time.Minute})
				if dlm.ErrorCode(err) == dlm.CodeLockConflict {
					continue
				}
				if err != nil {
					t.Errorf("acquire: %v", err)
					return
				}
				written.Add(1)
				if _, err := e.Release(ctx, "t", l.ID); err != nil {
					t.Errorf("release: %v", err)
					return
				}
				written.Add(1)
			}
		}()
	}

	var last int64
	read := func() int {
		var got []dlm.Event
		err := reader.View(ctx, func(tx dlm.ReadTx) error {
			var err error
			got, err = tx.Events(ctx, dlm.EventFilter{Since: last, Limit: 500})
			return err
		})
		if err != nil {
			t.Fatalf("events: %v", err)
		}
		for _, e := range got {
			// IDs are dense, so anything but last+1 is a gap or a repeat.
			if e.ID != last+1 {
				t.Fatalf("read event %d after %d", e.ID, last)
			}
			last = e.ID
		}
		return len(got)
	}
	start := time.Now()
	for time.Since(start) < 3*time.Second {
		read()
	}
	close(stop)
	wg.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for last < written.Load() {
		if read() == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("read %d events of %d written", last, written.Load())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	if last != written.Load() {
		t.Errorf("read %d events, %d written", last, written.Load())
	}
	t.Logf("%d events read in order", last)
}

// TestEventReadWaitsForLateCommit: a writer that took an event id and has
// not committed yet holds back every read of the log past it, so that a
// reader never reads a later id and then sees the earlier one appear.
func TestEventReadWaitsForLateCommit(t *testing.T) {
	url, schema := freshSchema(t)
	ctx := t.Context()
	s := open(t, url, schema, postgres.Options{})
	e := engine.New(s, engine.Options{})
	t.Cleanup(e.Close)
	read := func(ctx context.Context) ([]dlm.Event, error) {
		var got []dlm.Event
		err := s.View(ctx, func(tx dlm.ReadTx) error {
			var err error
			got, err = tx.Events(ctx, dlm.EventFilter{})
			return err
		})
		return got, err
	}

	// A slow writer, as a store's commit does it: its xid, then an id.
	slow, err := adminConn(t, url).Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Rollback(context.WithoutCancel(ctx))
	var slowID int64
	if err := slow.QueryRow(ctx, `SELECT pg_current_xact_id()`).Scan(new(any)); err != nil {
		t.Fatal(err)
	}
	if err := slow.QueryRow(ctx, `INSERT INTO `+schema+`.events (id, type, ns, name, holder, mode, token, at)
		VALUES (nextval('`+schema+`.event_ids'), 1, 't', 'slow', 'h', 1, 1, now()) RETURNING id`).Scan(&slowID); err != nil {
		t.Fatal(err)
	}
	// A later id commits first.
	if _, _, err := e.Acquire(ctx, engine.AcquireRequest{Tenant: "t", Key: dlm.Key{Namespace: "t", Name: "fast"}, HolderID: "h"}); err != nil {
		t.Fatal(err)
	}
	// The read waits for the slow writer: commit it once the reader is
	// seen polling for the end of the transactions in flight.
	type answer struct {
		events []dlm.Event
		err    error
	}
	done := make(chan answer, 1)
	go func() {
		got, err := read(ctx)
		done <- answer{got, err}
	}()
	probe := adminConn(t, url)
	dlmtest.Eventually(t, "the reader to wait for the slow writer", func() bool {
		var n int
		err := probe.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_snapshot_xmin%'`).Scan(&n)
		return err == nil && n > 0
	})
	if err := slow.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	a := <-done
	got, err := a.events, a.err
	if err != nil || len(got) != 2 || got[0].ID != slowID || got[0].Key.Name != "slow" || got[1].Key.Name != "fast" || got[1].ID <= slowID {
		t.Fatalf("after the slow commit: %+v, %v; want slow (id %d), then fast", got, err, slowID)
	}
}

// TestChangesAcrossInstances checks the Notifier: a commit on one instance
// wakes another, and so does a lost LISTEN connection once it is back.
func TestChangesAcrossInstances(t *testing.T) {
	url, schema := freshSchema(t)
	ctx := t.Context()
	a := open(t, url, schema, postgres.Options{})
	b := open(t, url, schema, postgres.Options{})
	eb := engine.New(b, engine.Options{})
	t.Cleanup(eb.Close)
	drain(a.Changes())

	start := time.Now()
	if _, _, err := eb.Acquire(ctx, engine.AcquireRequest{Tenant: "t", Key: dlm.Key{Namespace: "t", Name: "x"}, HolderID: "h"}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-a.Changes():
		t.Logf("notified %v after the commit began", time.Since(start))
	case <-time.After(5 * time.Second):
		t.Fatal("no change notification from the other instance")
	}

	// Cut every LISTEN connection of the schema; a reconnects and fires.
	drain(a.Changes())
	conn := adminConn(t, url)
	if _, err := conn.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE query LIKE 'LISTEN %' AND query LIKE '%'||$1||'%' AND pid <> pg_backend_pid()`, schema); err != nil {
		t.Fatal(err)
	}
	select {
	case <-a.Changes():
	case <-time.After(5 * time.Second):
		t.Fatal("no change notification after the LISTEN connection came back")
	}
	// And it listens again.
	drain(a.Changes())
	if _, _, err := eb.Acquire(ctx, engine.AcquireRequest{Tenant: "t", Key: dlm.Key{Namespace: "t", Name: "y"}, HolderID: "h"}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-a.Changes():
	case <-time.After(5 * time.Second):
		t.Fatal("no change notification after reconnecting")
	}
}

func drain(c <-chan struct{}) {
	for {
		select {
		case <-c:
		default:
			return
		}
	}
}
