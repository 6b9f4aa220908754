package sqlite

import (
	"context"
	"database/sql"
	"strings"

	"github.com/dlmhq/dlm"
)

// Events implements dlm.ReadTx. SQLite has one writer and assigns IDs in
// commit order, so a committed event never appears below one already read.
func (tx *readTx) Events(ctx context.Context, f dlm.EventFilter) ([]dlm.Event, error) {
	var where strings.Builder
	args := []any{f.Since}
	where.WriteString(`id > ?`)
	if f.Namespaces != nil {
		if len(f.Namespaces) == 0 {
			return []dlm.Event{}, nil
		}
		where.WriteString(` AND ns IN (?` + strings.Repeat(`, ?`, len(f.Namespaces)-1) + `)`)
		for _, ns := range f.Namespaces {
			args = append(args, ns)
		}
	}
	if f.Name != "" {
		where.WriteString(` AND name = ?`)
		args = append(args, f.Name)
	}
	if f.Prefix != "" {
		where.WriteString(` AND name >= ? AND name < ?`)
		args = append(args, f.Prefix, f.Prefix+"\x7f")
	}
	limit := f.Limit
	if limit <= 0 {
		limit = 1000
	}
	args = append(args, limit)
	events := []dlm.Event{}
	err := tx.queryEach(ctx, func(r *sql.Rows) error {
		var e dlm.Event
		var at int64
		err := r.Scan(&e.ID, &e.Type, &e.Key.Namespace, &e.Key.Name, &e.HolderID, &e.Mode, &e.Token, &at)
		e.At = fromNanos(at)
		events = append(events, e)
		return err
	}, `SELECT id, type, ns, name, holder, mode, token, at FROM events WHERE `+where.String()+` ORDER BY id LIMIT ?`, args...)
	return events, err
}

func (tx *readTx) LastEventID(ctx context.Context) (int64, error) {
	return tx.scalar(ctx, `SELECT coalesce(max(id), 0) FROM events`)
}

func (tx *readTx) FirstEventID(ctx context.Context) (int64, error) {
	return tx.scalar(ctx, `SELECT coalesce(min(id), 0) FROM events`)
}

func (tx *readTx) scalar(ctx context.Context, query string, args ...any) (n int64, err error) {
	err = tx.queryEach(ctx, func(r *sql.Rows) error { return r.Scan(&n) }, query, args...)
	return n, err
}
