package postgres

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
)

// Event IDs and the sequencer.
//
// A transaction cannot take its events' IDs from a sequence: IDs would be
// handed out before commit and transactions commit out of order, so a reader
// could read ID 8 and only later see ID 7 appear. Taking them from one
// counter row at commit time would serialise every commit, fsync included.
//
// Instead writers insert events with a NULL id, and one instance of the
// cluster, the sequencer, numbers committed events afterwards: in one short
// transaction it locks the counter row, gives the pending rows the next IDs
// in insertion order and commits. Numbering transactions follow one another,
// so each one's IDs are above every ID already visible, and readers, who
// read only numbered rows, never see an ID appear below one they have read.
// The rows of one transaction are numbered in the order they were written;
// transactions on one lock commit one after the other under its row lock, so
// their events are numbered in that order too.
//
// The sequencer is elected with a session advisory lock held on a connection
// of its own; if its instance dies the connection closes, the lock is freed
// and another instance takes over within campaignEvery. Even two sequencers
// at once would be safe: each numbering transaction reads the pending rows
// only after it has locked the counter row.
//
// It runs when woken by a commit of this instance, by a notification of
// another instance's commit, and at least every sequenceEvery.
const (
	campaignEvery = 500 * time.Millisecond
	sequenceEvery = time.Second
	// numberBatch bounds one numbering transaction.
	numberBatch = 10000
)

// sequence campaigns for the sequencer role until Close, and numbers events
// while it holds it.
func (s *Store) sequence() {
	ctx, cancel := s.quitContext()
	defer cancel()
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	for {
		if conn == nil || conn.IsClosed() {
			c, err := pgx.ConnectConfig(ctx, s.connCfg.Copy())
			if err == nil {
				conn = c
			}
		}
		if conn != nil && !conn.IsClosed() {
			var leader bool
			err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, lockKey("sequencer", s.schema)).Scan(&leader)
			if err == nil && leader {
				s.log.Debug("dlm: this instance numbers events", "instance", s.instance)
				err = s.lead(ctx, conn)
				if ctx.Err() != nil {
					return
				}
				s.log.Warn("dlm: event sequencer stopped", "err", err)
			}
			if err != nil {
				conn.Close(context.Background())
			}
		}
		select {
		case <-s.quit:
			return
		case <-time.After(campaignEvery):
		}
	}
}

// quitContext returns a context cancelled by Close.
func (s *Store) quitContext() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		select {
		case <-s.quit:
		case <-ctx.Done():
		}
		cancel()
	}()
	return ctx, cancel
}

// lead numbers events until Close or an error.
func (s *Store) lead(ctx context.Context, conn *pgx.Conn) error {
	tick := time.NewTicker(sequenceEvery)
	defer tick.Stop()
	for {
		n, err := numberEvents(ctx, conn, numberBatch)
		if err != nil {
			return err
		}
		if n > 0 {
			// Tell every instance (this one too, through its listener).
			if err := notify(ctx, conn, s.channel, payloadNumbered); err != nil {
				return err
			}
			if n == numberBatch {
				continue
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.kickSeq:
		case <-tick.C:
		}
	}
}

// numberEvents gives the next IDs to up to limit events not numbered yet, in
// insertion order, and returns how many it numbered. Both statements run in
// one implicit transaction (one batch, one round trip); the second takes its
// snapshot only after the first has locked the counter row.
func numberEvents(ctx context.Context, conn *pgx.Conn, limit int) (n int, err error) {
	b := &pgx.Batch{}
	b.Queue(`SELECT last FROM event_counter FOR UPDATE`)
	b.Queue(`WITH c AS (SELECT last FROM event_counter),
		p AS (SELECT seq, row_number() OVER (ORDER BY seq) AS rn
			FROM (SELECT seq FROM events WHERE id IS NULL ORDER BY seq LIMIT $1) pending),
		u AS (UPDATE events e SET id = c.last + p.rn FROM p, c WHERE e.seq = p.seq RETURNING e.id),
		last AS (UPDATE event_counter SET last = (SELECT max(id) FROM u) WHERE EXISTS (SELECT FROM u))
		SELECT count(*) FROM u`, limit).
		QueryRow(func(r pgx.Row) error { return r.Scan(&n) })
	err = conn.SendBatch(ctx, b).Close()
	return n, err
}
