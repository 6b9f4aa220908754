package sqlite_test

import (
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/sqlite"
	"github.com/dlmhq/dlm/storetest"
)

func TestStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) func() dlm.Store {
		path := filepath.Join(t.TempDir(), "dlm.db")
		return func() dlm.Store {
			s, err := sqlite.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
	})
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

// TestFailedUpdateLeavesNoTrace checks that an Update whose fn fails after
// saving undoes its writes, in the file and in the committer's memory, while
// the other Updates of its batch commit.
func TestFailedUpdateLeavesNoTrace(t *testing.T) {
	s, err := sqlite.Open(filepath.Join(t.TempDir(), "dlm.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := t.Context()
	acquire := func(name string, fail bool) error {
		return s.Update(ctx, func(tx dlm.Tx) error {
			k := dlm.Key{Namespace: "t", Name: name}
			st, err := tx.LoadLock(ctx, k)
			if err != nil {
				return err
			}
			var c dlm.Change
			st.Acquire(tx.Now(), dlm.Request{ID: name, Tenant: "t", Key: k, Mode: dlm.Exclusive, HolderID: "h", TTL: time.Hour}, &c)
			if err := tx.Save(ctx, st, &c); err != nil {
				return err
			}
			if fail {
				return errBoom
			}
			return nil
		})
	}
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := acquire(fmt.Sprint("n", i), i%2 == 1)
			if (i%2 == 1) != errors.Is(err, errBoom) {
				t.Errorf("update %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	for i := range 20 {
		k := dlm.Key{Namespace: "t", Name: fmt.Sprint("n", i)}
		var inFile, inMemory int
		s.View(ctx, func(tx dlm.ReadTx) error {
			st, err := tx.LoadLock(ctx, k)
			inFile = len(st.Holders)
			return err
		})
		s.Update(ctx, func(tx dlm.Tx) error {
			st, err := tx.LoadLock(ctx, k)
			inMemory = len(st.Holders)
			return err
		})
		want := 1 - i%2
		if inFile != want || inMemory != want {
			t.Errorf("n%d: %d holders in the file, %d in memory; want %d", i, inFile, inMemory, want)
		}
	}
}

var errBoom = errors.New("boom")

// TestObserveCommits checks that every Update is counted in exactly one
// observed batch, and that a batch's time covers its commit.
func TestObserveCommits(t *testing.T) {
	s, err := sqlite.Open(filepath.Join(t.TempDir(), "dlm.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var (
		mu      sync.Mutex
		ops     int
		batches int
		zero    int
	)
	s.ObserveCommits(func(n int, d time.Duration) {
		mu.Lock()
		defer mu.Unlock()
		ops += n
		batches++
		if d <= 0 {
			zero++
		}
	})
	const n = 64
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			if err := s.Update(t.Context(), func(dlm.Tx) error { return nil }); err != nil {
				t.Errorf("update: %v", err)
			}
		})
	}
	wg.Wait()
	s.ObserveCommits(nil)
	if err := s.Update(t.Context(), func(dlm.Tx) error { return nil }); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if ops != n || batches < 1 || batches > n || zero > 0 {
		t.Errorf("observed %d updates in %d batches (%d of them without time), want %d updates", ops, batches, zero, n)
	}
	t.Logf("%d updates in %d batches", ops, batches)
}
