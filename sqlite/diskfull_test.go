package sqlite_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/engine"
	"github.com/dlmhq/dlm/sqlite"
)

// smallDisk mounts a tmpfs of size bytes for the test: a filesystem that
// really fills up. It needs root (CI runs as root); elsewhere it skips,
// except in CI, where a skip would hide the test.
func smallDisk(t *testing.T, size int64) string {
	t.Helper()
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d", size)); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("mounting a small tmpfs: %v", err)
		}
		t.Skipf("cannot mount a small tmpfs (not root?): %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	return dir
}

// fill writes a file in dir until the filesystem is full, and returns its
// path.
func fill(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	block := make([]byte, 64<<10)
	for {
		if _, err := f.Write(block); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filling the disk: %v", err)
			}
			break
		}
	}
	for range 64 { // the last partial blocks
		if _, err := f.Write(block[:512]); err != nil {
			break
		}
	}
	return path
}

// TestDiskFullRecovers fills the store's disk under load: operations fail
// with unavailable while it is full, and once space is freed the store
// answers again by itself, with every acknowledged lease still held.
func TestDiskFullRecovers(t *testing.T) {
	dir := smallDisk(t, 24<<20)
	s, err := sqlite.OpenWith(filepath.Join(dir, "dlm.db"), sqlite.Options{JournalSize: sqlite.MinJournalSize})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	e := engine.New(s, engine.Options{})
	defer e.Close()
	ctx := t.Context()
	n := 0
	acquire := func() (dlm.Lease, error) {
		n++
		l, _, err := e.Acquire(ctx, engine.AcquireRequest{
			Tenant: "t", Key: dlm.Key{Namespace: "t", Name: fmt.Sprint("full/", n)}, HolderID: "h", TTL: time.Hour,
		})
		return l, err
	}
	var held []dlm.Lease
	for range 20 {
		l, err := acquire()
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, l)
	}

	filler := fill(t, dir)
	failed := false
	for range 20000 {
		l, err := acquire()
		if err == nil {
			held = append(held, l)
			continue
		}
		if dlm.ErrorCode(err) != dlm.CodeUnavailable {
			t.Fatalf("acquire on a full disk: %v; want unavailable", err)
		}
		failed = true
		break
	}
	if !failed {
		t.Fatal("20,000 acquires on a full disk all succeeded")
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		l, err := acquire()
		if err == nil {
			held = append(held, l)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("30 s after space was freed the store still answers %v", err)
		}
		// The store replaces its broken committer about once a second.
		time.Sleep(50 * time.Millisecond)
	}
	for _, l := range held {
		if got, err := e.Lease(ctx, "t", l.ID); err != nil || got.Token != l.Token {
			t.Errorf("lease %s after the disk filled and emptied: %+v, %v; want it held", l.Key.Name, got, err)
		}
	}
}

// TestSmallDiskStarts opens a store on a disk too small for the default
// journals: their size shrinks to fit.
func TestSmallDiskStarts(t *testing.T) {
	dir := smallDisk(t, 8<<20)
	s, err := sqlite.Open(filepath.Join(dir, "dlm.db"))
	if err != nil {
		t.Fatalf("open on an 8 MiB disk: %v", err)
	}
	defer s.Close()
	e := engine.New(s, engine.Options{})
	defer e.Close()
	if _, _, err := e.Acquire(t.Context(), engine.AcquireRequest{
		Tenant: "t", Key: dlm.Key{Namespace: "t", Name: "small"}, HolderID: "h",
	}); err != nil {
		t.Fatal(err)
	}
}
