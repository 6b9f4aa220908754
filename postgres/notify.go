package postgres

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
)

// Changes implements dlm.Notifier. It receives a value soon after another
// instance commits a change (its events are numbered by then), and once after
// the LISTEN connection is re-established (notifications may have been
// missed meanwhile). Values are coalesced. Changes made through this Store
// are not announced here: its caller knows of them when Commit returns, and
// hearing them again would only make it read the log twice.
func (s *Store) Changes() <-chan struct{} { return s.changes }

// closeConn closes a dedicated connection, waiting at most a second for a
// clean goodbye from a server that may be gone.
func closeConn(conn *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	conn.Close(ctx)
}

// reconnect pauses between attempts to re-establish a dedicated connection.
const reconnectPause = 200 * time.Millisecond

// listen holds the LISTEN connection until Close, re-establishing it after
// a failure.
func (s *Store) listen() {
	ctx, cancel := s.quitContext()
	defer cancel()
	for first := true; ; first = false {
		conn, err := pgx.ConnectConfig(ctx, s.connCfg.Copy())
		if err == nil {
			_, err = conn.Exec(ctx, `LISTEN `+pgx.Identifier{s.channel}.Sanitize())
			if err == nil {
				if !first {
					// Whatever was committed while we were away went
					// unannounced here.
					kick(s.changes)
				}
				err = s.receive(ctx, conn)
			}
			closeConn(conn)
		}
		if ctx.Err() != nil {
			return
		}
		s.log.Warn("dlm: LISTEN connection lost; reconnecting", "err", err)
		select {
		case <-s.quit:
			return
		case <-time.After(reconnectPause):
		}
	}
}

func (s *Store) receive(ctx context.Context, conn *pgx.Conn) error {
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		if n.Payload != s.instance {
			kick(s.changes)
		}
	}
}

// publish tells the other instances about this instance's commits. It runs
// apart from the transactions it announces: a transaction that NOTIFYs takes
// a database-wide lock at commit and keeps it through its WAL flush, which
// would make every commit wait for every other. Here one notification, with
// no durable writes of its own, announces all the commits made while the
// previous one was being sent. A notification lost to a crash between commit
// and publish is made up for by the engine's periodic reads of the log.
func (s *Store) publish() {
	ctx, cancel := s.quitContext()
	defer cancel()
	for {
		select {
		case <-s.quit:
			return
		case <-s.kickPub:
		}
		conn, err := s.pool.Acquire(ctx)
		if err == nil {
			err = notify(ctx, conn.Conn(), s.channel, s.instance)
			conn.Release()
		}
		if err != nil && ctx.Err() == nil {
			s.log.Debug("dlm: notifying other instances failed", "err", err)
		}
	}
}

// notify sends a notification in a transaction of its own that does not wait
// for a WAL flush: it holds the notification queue's lock only briefly.
// The payload names the instance, which does not listen to itself.
func notify(ctx context.Context, conn *pgx.Conn, channel, instance string) error {
	_, err := conn.Exec(ctx, `SELECT set_config('synchronous_commit', 'off', true), pg_notify($1, $2)`, channel, instance)
	return err
}

// instanceRetention is how long the row of an instance that stopped
// heartbeating is kept. Its waiters count as gone after DeadAfter anyway.
const instanceRetention = time.Hour

// janitor records this instance's heartbeat, so that other instances know its
// waiters are still wanted, forgets instances long gone and folds the usage
// rows of backends that are gone (foldUsage).
func (s *Store) janitor() {
	ctx, cancel := s.quitContext()
	defer cancel()
	tick := time.NewTicker(s.opts.Heartbeat)
	defer tick.Stop()
	for n := 0; ; n++ {
		select {
		case <-s.quit:
			return
		case <-tick.C:
		}
		hctx, hcancel := context.WithTimeout(ctx, s.opts.OpTimeout)
		_, err := s.pool.Exec(hctx, `INSERT INTO instances (id, seen_at) VALUES ($1, clock_timestamp())
			ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at`, s.instance)
		if err == nil && n%60 == 0 {
			_, err = s.pool.Exec(hctx, `DELETE FROM instances WHERE seen_at < clock_timestamp() - make_interval(secs => $1)`,
				instanceRetention.Seconds())
			if err == nil {
				err = s.foldUsage(hctx)
			}
		}
		hcancel()
		if err != nil && ctx.Err() == nil {
			s.log.Debug("dlm: heartbeat failed", "err", err)
		}
	}
}
