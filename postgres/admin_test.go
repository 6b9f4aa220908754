package postgres_test

import (
	"testing"
	"time"

	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/postgres"
)

// release loads l's lock by the lease, releases it and commits.
func release(t testing.TB, s *postgres.Store, l dlm.Lease) {
	t.Helper()
	b, err := s.Load(t.Context(), &dlm.Need{Leases: []string{l.ID}})
	if err != nil {
		t.Fatal(err)
	}
	st := b.Lock(l.Key)
	var c dlm.Change
	if _, ok := st.Release(b.Now(), l.ID, &c); !ok {
		b.Abort()
		t.Fatalf("release of %s found no lease", l.ID)
	}
	if err := b.Commit(t.Context(), []dlm.Save{{State: st, Change: &c}}); err != nil {
		t.Fatal(err)
	}
}

func TestPrune(t *testing.T) {
	url, schema := freshSchema(t)
	s := open(t, url, schema, postgres.Options{})
	ctx := t.Context()
	var ids []string
	for range 3 {
		l := grant(t, s, ckey("p"), "h", "")
		release(t, s, l)
		ids = append(ids, l.ID)
	}
	past, future := time.Now().Add(-time.Hour), time.Now().Add(time.Hour)

	if n, err := s.PruneEnded(ctx, past, 10); err != nil || n != 0 {
		t.Errorf("PruneEnded before any ended: %d, %v", n, err)
	}
	if n, err := s.PruneEnded(ctx, future, 2); err != nil || n != 2 {
		t.Errorf("PruneEnded with limit 2: %d, %v", n, err)
	}
	if n, err := s.PruneEnded(ctx, future, 10); err != nil || n != 1 {
		t.Errorf("PruneEnded of the rest: %d, %v", n, err)
	}
	b, err := s.Load(ctx, &dlm.Need{Leases: ids})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if live, ended := b.Lease(id); live != nil || ended != nil {
			t.Errorf("lease %s after pruning: %+v, %+v", id, live, ended)
		}
	}
	b.Abort()

	// Six events; keep the newest two, three at a time at the most.
	if n, err := s.PruneEvents(ctx, past, 2, 3); err != nil || n != 3 {
		t.Errorf("PruneEvents with limit 3: %d, %v", n, err)
	}
	if n, err := s.PruneEvents(ctx, past, 2, 100); err != nil || n != 1 {
		t.Errorf("PruneEvents of the rest past keep: %d, %v", n, err)
	}
	var events []dlm.Event
	if err := s.View(ctx, func(tx dlm.ReadTx) error {
		events, err = tx.Events(ctx, dlm.EventFilter{})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if len(events) != 2 || events[1].Type != dlm.EventReleased {
		t.Errorf("events kept: %+v", events)
	}
	if n, err := s.PruneEvents(ctx, future, 2, 100); err != nil || n != 2 {
		t.Errorf("PruneEvents of everything older than before: %d, %v", n, err)
	}
}

func TestAPIKeys(t *testing.T) {
	url, schema := freshSchema(t)
	s := open(t, url, schema, postgres.Options{})
	ctx := t.Context()
	now := time.Now().UTC().Truncate(time.Microsecond)
	k := dlm.APIKey{ID: "k1", Tenant: "acme", Hash: []byte("hash"), CreatedAt: now}
	if err := s.PutAPIKey(ctx, k); dlm.ErrorCode(err) != dlm.CodeNotFound {
		t.Errorf("a key of a tenant that does not exist: %v, want not_found", err)
	}
	if err := s.CreateTenant(ctx, dlm.Tenant{Name: "acme", CreatedAt: now}, k); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateTenant(ctx, dlm.Tenant{Name: "acme", CreatedAt: now}, dlm.APIKey{ID: "k2", Tenant: "acme"}); dlm.ErrorCode(err) != dlm.CodeInvalidArgument {
		t.Errorf("a tenant again: %v, want invalid_argument", err)
	}
	if err := s.PutAPIKey(ctx, dlm.APIKey{ID: "admin", Hash: []byte("h"), CreatedAt: now}); err != nil {
		t.Errorf("the admin's key: %v", err)
	}
	if err := s.PutAPIKey(ctx, dlm.APIKey{ID: "admin", Hash: []byte("h"), CreatedAt: now}); dlm.ErrorCode(err) != dlm.CodeInvalidArgument {
		t.Errorf("a key ID again: %v, want invalid_argument", err)
	}
	if ok, err := s.RevokeAPIKey(ctx, "other", "k1"); err != nil || ok {
		t.Errorf("revoking another tenant's key: %v, %v", ok, err)
	}
	if ok, err := s.RevokeAPIKey(ctx, "acme", "k1"); err != nil || !ok {
		t.Errorf("revoking: %v, %v", ok, err)
	}
	var got dlm.APIKey
	var found bool
	err := s.View(ctx, func(tx dlm.ReadTx) error {
		var err error
		got, found, err = tx.APIKey(ctx, "k1")
		return err
	})
	if err != nil || !found || !got.Revoked || got.Tenant != "acme" || !got.CreatedAt.Equal(now) {
		t.Errorf("the key after revoking: %+v, %v, %v", got, found, err)
	}
}
