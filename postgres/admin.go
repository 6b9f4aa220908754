package postgres

import (
	"context"
	"errors"
	"time"

	"github.com/dlmhq/dlm"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// The writes outside lock state: tenants, keys and pruning, each a plain
// transaction of its own.

// write runs fn in a transaction on a pooled connection, with the call's
// context, and commits it.
func (s *Store) write(ctx context.Context, fn func(context.Context, pgx.Tx) error) error {
	octx, done, err := s.call(ctx)
	if err != nil {
		return err
	}
	defer done()
	return unavailable(pgx.BeginFunc(octx, s.pool, func(tx pgx.Tx) error { return fn(octx, tx) }))
}

// isUniqueViolation reports whether err is a unique_violation.
func isUniqueViolation(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505"
}

// CreateTenant implements dlm.Store.
func (s *Store) CreateTenant(ctx context.Context, t dlm.Tenant, first dlm.APIKey) error {
	return s.write(ctx, func(ctx context.Context, tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO tenants (name, created_at) VALUES ($1, $2)`, t.Name, t.CreatedAt)
		if isUniqueViolation(err) {
			return dlm.Invalid("name", "tenant %q exists", t.Name)
		}
		if err != nil {
			return err
		}
		return putKey(ctx, tx, first)
	})
}

// PutAPIKey implements dlm.Store.
func (s *Store) PutAPIKey(ctx context.Context, k dlm.APIKey) error {
	return s.write(ctx, func(ctx context.Context, tx pgx.Tx) error { return putKey(ctx, tx, k) })
}

// putKey inserts k if its tenant exists (or it is the admin's). A key whose
// ID is taken (two instances bootstrapping at once) is invalid_argument.
func putKey(ctx context.Context, tx pgx.Tx, k dlm.APIKey) error {
	tag, err := tx.Exec(ctx, `INSERT INTO api_keys (id, tenant, hash, created_at) SELECT $1, $2, $3, $4
		WHERE $2 = '' OR EXISTS (SELECT FROM tenants WHERE name = $2)`,
		k.ID, k.Tenant, k.Hash, k.CreatedAt)
	switch {
	case isUniqueViolation(err):
		return dlm.Invalid("id", "API key %q exists", k.ID)
	case err == nil && tag.RowsAffected() == 0:
		return dlm.Errorf(dlm.CodeNotFound, "no tenant %q", k.Tenant)
	}
	return err
}

// RevokeAPIKey implements dlm.Store.
func (s *Store) RevokeAPIKey(ctx context.Context, tenant, id string) (found bool, err error) {
	err = s.write(ctx, func(ctx context.Context, tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE api_keys SET revoked = true WHERE tenant = $1 AND id = $2`, tenant, id)
		found = tag.RowsAffected() > 0
		return err
	})
	return found, err
}

// PruneEnded implements dlm.Store.
func (s *Store) PruneEnded(ctx context.Context, before time.Time, limit int) (n int, err error) {
	err = s.write(ctx, func(ctx context.Context, tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM ended_leases WHERE id IN (
			SELECT id FROM ended_leases WHERE ended_at < $1 ORDER BY ended_at LIMIT $2)`, before, limit)
		n = int(tag.RowsAffected())
		return err
	})
	return n, err
}

// PruneEvents implements dlm.Store. The newest keep are counted back from
// the largest id committed.
func (s *Store) PruneEvents(ctx context.Context, before time.Time, keep int64, limit int) (n int, err error) {
	err = s.write(ctx, func(ctx context.Context, tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM events WHERE seq IN (
			SELECT seq FROM events WHERE at < $1 OR id <= (SELECT coalesce(max(id), 0) FROM events) - $2
			ORDER BY id LIMIT $3)`, before, keep, limit)
		n = int(tag.RowsAffected())
		return err
	})
	return n, err
}
