package storetest

import (
	"testing"
	"time"

	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/engine"
)

// RequestedTTLMigration checks that a database whose leases were written
// before stores kept the TTL an acquire asked for is migrated in place, and
// that those leases keep answering idempotent retries, compared with their
// TTL. open opens a store on the one database; downgrade, called with no
// store open, takes the database back to the schema of before.
func RequestedTTLMigration(t *testing.T, open func() dlm.Store, downgrade func()) {
	ctx := t.Context()
	r := areq("old", "h", dlm.Exclusive)
	r.IdempotencyKey = "k"
	s := open()
	e := engine.New(s, engine.Options{})
	first, _, err := e.Acquire(ctx, r)
	e.Close()
	if cerr := s.Close(); err != nil || cerr != nil {
		t.Fatal(err, cerr)
	}
	downgrade()

	s = open()
	defer s.Close()
	e = engine.New(s, engine.Options{})
	defer e.Close()
	again, replayed, err := e.Acquire(ctx, r)
	if err != nil || !replayed || again.ID != first.ID {
		t.Errorf("retry after the migration = %v (replayed %v), %v; want %v replayed", again.ID, replayed, err, first.ID)
	}
	other := r
	other.TTL = 2 * time.Minute
	if _, _, err := e.Acquire(ctx, other); dlm.ErrorCode(err) != dlm.CodeIdempotencyKeyReused {
		t.Errorf("retry with another ttl after the migration: %v, want idempotency_key_reused", err)
	}
}
