package sqlite_test

import (
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/engine"
	"github.com/dlmhq/dlm/sqlite"
)

// TestJournalRecoversLostCommits simulates a power loss after batches were
// journaled and acknowledged but before SQLite's own commits reached the
// disk: the database file is an older copy, the journal is the newest. On
// open, the journal's batches are applied again and nothing acknowledged is
// lost.
func TestJournalRecoversLostCommits(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "dlm.db")
	ctx := t.Context()
	open := func() (*sqlite.Store, *engine.Engine) {
		s, err := sqlite.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		return s, engine.New(s, engine.Options{})
	}
	req := func(name string) engine.AcquireRequest {
		return engine.AcquireRequest{Tenant: "t", Key: dlm.Key{Namespace: "t", Name: name}, HolderID: "h", TTL: time.Hour}
	}

	s, e := open()
	first, _, err := e.Acquire(ctx, req("a"))
	if err != nil {
		t.Fatal(err)
	}
	e.Close()
	s.Close()
	old := filepath.Join(t.TempDir(), "old.db")
	copyFile(t, path, old) // the database as it stood after the first lease

	s, e = open()
	second, _, err := e.Acquire(ctx, req("b"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Release(ctx, "t", first.ID); err != nil {
		t.Fatal(err)
	}
	third, _, err := e.Acquire(ctx, req("a"))
	if err != nil {
		t.Fatal(err)
	}
	e.Close()
	s.Close()
	// SQLite "lost" everything after the first lease; the journal has it.
	copyFile(t, old, path)
	os.Remove(path + "-wal")

	s, e = open()
	defer s.Close()
	defer e.Close()
	if got, err := e.Lease(ctx, "t", second.ID); err != nil || got.Token != second.Token {
		t.Errorf("lease b after recovery = %+v, %v", got, err)
	}
	if got, err := e.Lease(ctx, "t", third.ID); err != nil || got.Token != third.Token {
		t.Errorf("lease a#2 after recovery = %+v, %v", got, err)
	}
	if _, err := e.Lease(ctx, "t", first.ID); dlm.ErrorCode(err) != dlm.CodeLeaseEnded {
		t.Errorf("released lease after recovery: %v, want lease_ended", err)
	}
	next, _, err := e.Acquire(ctx, req("c"))
	if err != nil || next.Token < 1 {
		t.Errorf("acquire after recovery = %+v, %v", next, err)
	}
	events, _, err := e.Events(ctx, engine.EventQuery{Tenant: "t"})
	if err != nil || len(events) != 5 {
		t.Errorf("events after recovery: %d, %v; want 5", len(events), err)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.Create(to)
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
}
