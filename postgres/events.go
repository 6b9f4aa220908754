package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/dlmhq/dlm"
	"github.com/jackc/pgx/v5"
)

// Event ids.
//
// A writer takes its events' ids from the sequence event_ids as it inserts
// them, in the round trip that carries its COMMIT, as one block of
// consecutive ids (event_id_block: an advisory lock held only while the
// function runs, so that a commit's events, a multi-lock acquire's grants
// among them, are adjacent in the log), and holds no lock past that:
// instances commit side by side. But transactions commit in another
// order than they took ids, so at any instant a committed event may have an
// id above one still in flight. A reader that read it and moved on would
// miss the late one.
//
// So a reader first settles the log (settle): it reads the last id given
// out, M, then takes an xid of its own, X, and waits until no transaction
// with an xid below X is running. Every writer takes its xid before its
// ids (queueEvents), so the writer of any id up to M had its xid before M
// was read, hence before X: once those have all ended, every id up to M is
// committed or never will be. The reader then reads, in a snapshot taken
// after that, only ids up to M. Readers thus see a prefix of the log that
// only grows, and a read that starts after a Commit returned sees its
// events. The wait lasts as long as the commits in flight when the read
// began (one round trip and a WAL flush, usually).
//
// What it costs: an xid per settle, and a long-running transaction with an
// xid anywhere on the PostgreSQL server (even in another database) holds
// event reads, watches and "watch from now" back until it ends. Lock
// operations never wait for it.

// settlePoll bounds the pause between two checks of whether the
// transactions a reader waits for have ended.
const settlePoll = 2 * time.Millisecond

// sqlXmin reads the oldest xid still running.
const sqlXmin = `SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint`

// settle returns the last event id below which the log is complete: see
// above. It runs on conn outside any transaction.
func settle(ctx context.Context, conn *pgx.Conn) (int64, error) {
	var last, xid, xmin int64
	b := &pgx.Batch{}
	b.Queue(`SELECT last_value - (NOT is_called)::int FROM event_ids`).QueryRow(func(r pgx.Row) error { return r.Scan(&last) })
	b.Queue(`SELECT pg_current_xact_id()::text::bigint`).QueryRow(func(r pgx.Row) error { return r.Scan(&xid) })
	b.Queue(sqlXmin).QueryRow(func(r pgx.Row) error { return r.Scan(&xmin) })
	if err := conn.SendBatch(ctx, b).Close(); err != nil {
		return 0, err
	}
	for pause := 100 * time.Microsecond; xmin < xid; pause = min(2*pause, settlePoll) {
		select {
		case <-ctx.Done():
			return 0, context.Cause(ctx)
		case <-time.After(pause):
		}
		if err := conn.QueryRow(ctx, sqlXmin).Scan(&xmin); err != nil {
			return 0, err
		}
	}
	return last, nil
}

var errSettleLate = errors.New("postgres: an event read must come first in its View")

// eventsUpTo returns the id up to which this View may read the log: the
// log is settled before the View's snapshot is taken, so event reads come
// first in a View (the engine's do).
func (v *view) eventsUpTo() (int64, error) {
	switch {
	case v.settled:
		return v.upto, nil
	case !v.now.IsZero():
		return 0, errSettleLate
	}
	upto, err := settle(v.ctx, v.conn)
	if err != nil {
		return 0, err
	}
	v.upto, v.settled = upto, true
	return upto, nil
}

// Events implements dlm.ReadTx: the settled log after f.Since.
func (v *view) Events(ctx context.Context, f dlm.EventFilter) ([]dlm.Event, error) {
	upto, err := v.eventsUpTo()
	if err != nil {
		return nil, err
	}
	var where strings.Builder
	args := []any{f.Since, upto}
	where.WriteString(`id > $1 AND id <= $2`)
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
	err = v.query(func(r pgx.Rows) error {
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

// LastEventID implements dlm.ReadTx: the last id of the settled log.
func (v *view) LastEventID(ctx context.Context) (n int64, err error) {
	upto, err := v.eventsUpTo()
	if err != nil {
		return 0, err
	}
	err = v.query(func(r pgx.Rows) error { return r.Scan(&n) }, `SELECT coalesce(max(id), 0) FROM events WHERE id <= $1`, upto)
	return n, err
}

// FirstEventID implements dlm.ReadTx.
func (v *view) FirstEventID(ctx context.Context) (n int64, err error) {
	if _, err := v.eventsUpTo(); err != nil {
		return 0, err
	}
	err = v.query(func(r pgx.Rows) error { return r.Scan(&n) }, `SELECT coalesce(min(id), 0) FROM events`)
	return n, err
}
