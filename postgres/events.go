package postgres

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/dlmhq/dlm"
	"github.com/jackc/pgx/v5"
)

// Events implements dlm.ReadTx. It reads only events the sequencer has
// numbered; numbering transactions commit one after the other, each with
// larger IDs than the last, so any snapshot sees a prefix of the IDs and no
// event ever appears below an ID already read.
func (t *tx) Events(ctx context.Context, f dlm.EventFilter) ([]dlm.Event, error) {
	var where strings.Builder
	args := []any{f.Since}
	where.WriteString(`id > $1`)
	if f.Namespaces != nil {
		if len(f.Namespaces) == 0 {
			return []dlm.Event{}, nil
		}
		args = append(args, f.Namespaces)
		fmt.Fprintf(&where, ` AND ns = ANY($%d)`, len(args))
	}
	if f.Name != "" {
		args = append(args, f.Name)
		fmt.Fprintf(&where, ` AND name = $%d`, len(args))
	}
	if f.Prefix != "" {
		args = append(args, f.Prefix, f.Prefix+"\x7f")
		fmt.Fprintf(&where, ` AND name >= $%d AND name < $%d`, len(args)-1, len(args))
	}
	limit := f.Limit
	if limit <= 0 {
		limit = 1000
	}
	args = append(args, limit)
	events := []dlm.Event{}
	err := t.query(func(r pgx.Rows) error {
		var e dlm.Event
		var typ, mode int16
		err := r.Scan(&e.ID, &typ, &e.Key.Namespace, &e.Key.Name, &e.HolderID, &mode, &e.Token, &e.At)
		e.Type, e.Mode, e.At = dlm.EventType(typ), dlm.Mode(mode), e.At.UTC()
		events = append(events, e)
		return err
	}, fmt.Sprintf(`SELECT id, type, ns, name, holder, mode, token, at FROM events WHERE %s ORDER BY id LIMIT $%d`,
		where.String(), len(args)), args...)
	return events, err
}

// LastEventID implements dlm.ReadTx.
func (t *tx) LastEventID(ctx context.Context) (n int64, err error) {
	err = t.query(func(r pgx.Rows) error { return r.Scan(&n) }, `SELECT coalesce(max(id), 0) FROM events`)
	return n, err
}

// FirstEventID implements dlm.ReadTx.
func (t *tx) FirstEventID(ctx context.Context) (n int64, err error) {
	err = t.query(func(r pgx.Rows) error { return r.Scan(&n) }, `SELECT coalesce(min(id), 0) FROM events`)
	return n, err
}

// PruneEvents implements dlm.Tx. Events not numbered yet are never pruned.
func (t *tx) PruneEvents(ctx context.Context, before time.Time, keep int64, limit int) (int, error) {
	last, err := t.LastEventID(ctx)
	if err != nil {
		return 0, err
	}
	tag, err := t.exec(`DELETE FROM events WHERE seq IN (
		SELECT seq FROM events WHERE id IS NOT NULL AND (at < $1 OR id <= $2) ORDER BY id LIMIT $3)`,
		before, last-keep, limit)
	return int(tag.RowsAffected()), err
}
