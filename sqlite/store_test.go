package sqlite_test

import (
	"path/filepath"
	"testing"

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
