package sqlite

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/dlmhq/dlm"
)

// TestFailedCommitLeavesMemory makes the journal write fail (its file is
// closed under the committer) and checks that the failed commit left the
// in-memory state as it was, answered unavailable, and that the store
// recovers on the next batch with only what was committed.
func TestFailedCommitLeavesMemory(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "dlm.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := t.Context()
	a, b := dlm.Key{Namespace: "t", Name: "a"}, dlm.Key{Namespace: "t", Name: "b"}
	grant := func(k dlm.Key, id string) error {
		batch, err := s.Load(ctx, &dlm.Need{Keys: []dlm.Key{k}})
		if err != nil {
			return err
		}
		st := batch.Lock(k)
		var c dlm.Change
		if _, _, _, err := st.Acquire(batch.Now(), dlm.Request{ID: id, Tenant: "t", Key: k, Mode: dlm.Exclusive, HolderID: "h", TTL: time.Hour}, &c); err != nil {
			t.Fatal(err)
		}
		return batch.Commit(ctx, []dlm.Save{{State: st, Change: &c}})
	}
	if err := grant(a, "la"); err != nil {
		t.Fatal(err)
	}

	c := s.c
	lastEvent, usage := c.lastEvent, c.usage["t"]
	c.journals[c.active].f.Close()
	if err := grant(b, "lb"); dlm.ErrorCode(err) != dlm.CodeUnavailable {
		t.Fatalf("commit with the journal closed: %v; want unavailable", err)
	}
	if c.mem.locks[b] != nil || c.mem.leases["lb"] != (dlm.Key{}) || c.lastEvent != lastEvent || c.usage["t"] != usage {
		t.Errorf("the failed commit changed memory: lock %+v, lease %v, last event %d (was %d), usage %+v (was %+v)",
			c.mem.locks[b], c.mem.leases["lb"], c.lastEvent, lastEvent, c.usage["t"], usage)
	}

	// The next batch restarts the committer from the journals.
	if err := grant(b, "lb2"); err != nil {
		t.Fatalf("grant after the failure: %v", err)
	}
	err = s.View(ctx, func(tx dlm.ReadTx) error {
		for id, want := range map[string]bool{"la": true, "lb": false, "lb2": true} {
			live, _, err := tx.FindLease(ctx, id)
			if err != nil {
				return err
			}
			if (live != nil) != want {
				t.Errorf("lease %s after the restart: %+v; want held %v", id, live, want)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
