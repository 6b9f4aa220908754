package sqlite

import (
	"context"
	"time"

	"github.com/dlmhq/dlm"
)

// direct runs fn in a SQLite transaction on the write connection, for the
// rare writes that are not lock state (tenants, keys, pruning), and returns
// how many rows fn changed. It holds the writer and first waits for the
// applier to write every batch committed, so that the applier is idle and
// the file current. The journal does not record these writes, so a
// transaction that changed rows is made durable by syncing SQLite
// (checkpoint) before direct returns.
func (s *Store) direct(ctx context.Context, fn func(q querier) (int64, error)) (int64, error) {
	c, err := s.writer()
	if err != nil {
		return 0, err
	}
	defer s.mu.Unlock()
	if err := c.syncLazy(); err != nil {
		return 0, unavailable(err)
	}
	if err := c.progress.wait(ctx, c.seq); err != nil {
		return 0, err
	}
	c.forgetApplied()
	// The transaction's ends run whatever becomes of ctx: a statement of
	// fn's cut short by the caller must not leave it open.
	tctx := context.WithoutCancel(ctx)
	if err := c.w.exec(tctx, `BEGIN IMMEDIATE`); err != nil {
		return 0, unavailable(err)
	}
	n, err := fn(&c.w.stmts)
	if err != nil {
		if rerr := c.w.exec(tctx, `ROLLBACK`); rerr != nil {
			c.broken = rerr
		}
		if ctx.Err() != nil {
			return 0, context.Cause(ctx)
		}
		return 0, unavailable(err)
	}
	if err := c.w.exec(tctx, `COMMIT`); err != nil {
		c.broken = err
		return 0, unavailable(err)
	}
	if n > 0 {
		if err := c.checkpoint(); err != nil {
			c.broken = err
			return 0, unavailable(err)
		}
	}
	return n, nil
}

// exec runs one write of direct's and returns how many rows it changed.
func exec(ctx context.Context, q querier, query string, args ...any) (int64, error) {
	res, err := q.ExecContext(ctx, query, args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// CreateTenant implements dlm.Store.
func (s *Store) CreateTenant(ctx context.Context, t dlm.Tenant, first dlm.APIKey) error {
	_, err := s.direct(ctx, func(q querier) (int64, error) {
		n, err := exec(ctx, q, `INSERT INTO tenants (name, created_at) VALUES (?, ?) ON CONFLICT DO NOTHING`,
			t.Name, nanos(t.CreatedAt))
		if err == nil && n == 0 {
			err = dlm.Invalid("name", "tenant %q exists", t.Name)
		}
		if err != nil {
			return 0, err
		}
		return putAPIKey(ctx, q, first)
	})
	return err
}

// PutAPIKey implements dlm.Store.
func (s *Store) PutAPIKey(ctx context.Context, k dlm.APIKey) error {
	_, err := s.direct(ctx, func(q querier) (int64, error) { return putAPIKey(ctx, q, k) })
	return err
}

func putAPIKey(ctx context.Context, q querier, k dlm.APIKey) (int64, error) {
	n, err := exec(ctx, q, `INSERT INTO api_keys (id, tenant, hash, created_at)
		SELECT ?1, ?2, ?3, ?4 WHERE ?2 = '' OR EXISTS (SELECT 1 FROM tenants WHERE name = ?2)`,
		k.ID, k.Tenant, k.Hash, nanos(k.CreatedAt))
	if err == nil && n == 0 {
		err = dlm.Errorf(dlm.CodeNotFound, "no tenant %q", k.Tenant)
	}
	return n, err
}

// RevokeAPIKey implements dlm.Store.
func (s *Store) RevokeAPIKey(ctx context.Context, tenant, id string) (bool, error) {
	n, err := s.direct(ctx, func(q querier) (int64, error) {
		return exec(ctx, q, `UPDATE api_keys SET revoked = 1 WHERE tenant = ? AND id = ?`, tenant, id)
	})
	return n > 0, err
}

// PruneEnded implements dlm.Store.
func (s *Store) PruneEnded(ctx context.Context, before time.Time, limit int) (int, error) {
	n, err := s.direct(ctx, func(q querier) (int64, error) {
		return exec(ctx, q, `DELETE FROM ended_leases WHERE id IN (
			SELECT id FROM ended_leases WHERE ended_at < ? ORDER BY ended_at LIMIT ?)`, nanos(before), limit)
	})
	return int(n), err
}

// PruneEvents implements dlm.Store.
func (s *Store) PruneEvents(ctx context.Context, before time.Time, keep int64, limit int) (int, error) {
	n, err := s.direct(ctx, func(q querier) (int64, error) {
		last, err := (&readTx{q: q}).LastEventID(ctx)
		if err != nil {
			return 0, err
		}
		return exec(ctx, q, `DELETE FROM events WHERE id IN (
			SELECT id FROM events WHERE at < ? OR id <= ? ORDER BY id LIMIT ?)`, nanos(before), last-keep, limit)
	})
	return int(n), err
}
