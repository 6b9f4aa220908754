// Package postgres is the dlm.Store for cluster mode: any number of dlm
// instances share one PostgreSQL database, which is the single source of
// truth and of time.
//
// The engine groups concurrent operations and gives the store each group's
// needs at once: Load (load.go) reads them in one round trip and locks the
// group's locks rows FOR UPDATE, in key order, so that operations on one
// lock are serialised across instances and across this instance's own
// concurrent groups without ever deadlocking; Commit (commit.go) writes the
// group's decisions as a few multi-row statements that travel with COMMIT,
// so that one WAL flush makes them all durable.
//
// The database's clock is the only clock (the deployment model in README):
// Load reads clock_timestamp() after the locks it takes, and the group uses
// that value for every decision and stored time.
//
// Event ids come from a sequence, and readers read only up to an id below
// which every transaction has ended (events.go), so that a reader tailing
// the log by id never misses an event that commits late, while no lock is
// held across a commit cluster-wide. Nor is any row: a group locks the rows
// of its own locks and the advisory locks of its own idempotency keys, and
// counts its tenants' leases and waiters in rows of its own backend
// ("Usage rows" in writes.go), so that instances commit side by side.
// Changes are announced with LISTEN/NOTIFY apart from the commits
// (notify.go); instances record a heartbeat so that the waiters of an
// instance that died are dropped (janitor in notify.go).
//
// It uses github.com/jackc/pgx/v5 (pgxpool): the PostgreSQL driver and pool,
// whose batches pipeline a round trip's statements.
package postgres

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/dlmhq/dlm"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Options configure a Store. The zero value of each field means its default.
type Options struct {
	// Schema is the PostgreSQL schema that holds dlm's tables; it is created
	// if missing. Default: the connection's current schema (usually
	// "public"). Instances of one cluster must use the same schema; clusters
	// in different schemas of one database are independent.
	Schema string
	// MaxConns caps the pool, unless the URL sets pool_max_conns. Default
	// 16: the engine's groups in flight (see MaxBatches), and enough for
	// reads and the rest.
	MaxConns int32
	// OpTimeout bounds one Load, Commit, View or other call, including
	// waiting for a connection, so that no call hangs when the database
	// does. Default 10s.
	OpTimeout time.Duration
	// Heartbeat is how often the instance records that it is alive.
	// Default 1s.
	Heartbeat time.Duration
	// DeadAfter is how long after its last heartbeat an instance counts as
	// gone, and its queued waiters are dropped. Default 5s.
	DeadAfter time.Duration
	// Logger receives operational logs. Default slog.Default().
	Logger *slog.Logger

	// beforeLoad, if set, is called just before Load sends its round trip,
	// with the backend PID of its connection and the keys of the Need:
	// tests cut the connection there (export_test.go).
	beforeLoad func(pid uint32, keys []dlm.Key)
}

func (o *Options) setDefaults() {
	if o.MaxConns == 0 {
		o.MaxConns = 16
	}
	if o.OpTimeout == 0 {
		o.OpTimeout = 10 * time.Second
	}
	if o.Heartbeat == 0 {
		o.Heartbeat = time.Second
	}
	if o.DeadAfter == 0 {
		o.DeadAfter = 5 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// Store is a dlm.Store and dlm.Notifier on a PostgreSQL database. Its methods
// are safe for concurrent use.
type Store struct {
	pool     *pgxpool.Pool
	connCfg  *pgx.ConnConfig // for the dedicated connections
	opts     Options
	log      *slog.Logger
	schema   string
	channel  string // NOTIFY channel of this schema
	instance string // this instance's ID, recorded with its waiters

	changes chan struct{} // Notifier.Changes, buffered 1: coalesced
	kickPub chan struct{} // asks the publisher to NOTIFY other instances

	quit    chan struct{}
	bg      sync.WaitGroup
	closeMu sync.RWMutex // held for reading by calls in flight
	closed  bool
}

var (
	_ dlm.Store             = (*Store)(nil)
	_ dlm.Notifier          = (*Store)(nil)
	_ dlm.ConcurrentBatches = (*Store)(nil)
)

// Open connects to the database at url (a PostgreSQL URL or DSN, as pgx
// accepts it), migrates the schema and starts the background work of an
// instance: the LISTEN connection, the publisher of notifications and the
// heartbeat. It fails if the database
// cannot be reached within opts.OpTimeout.
func Open(ctx context.Context, url string, opts Options) (*Store, error) {
	opts.setDefaults()
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("postgres URL: %w", err)
	}
	if !strings.Contains(url, "pool_max_conns") {
		cfg.MaxConns = opts.MaxConns
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = 5 * time.Second
	}
	rp := cfg.ConnConfig.RuntimeParams
	if _, set := rp["application_name"]; !set {
		rp["application_name"] = "dlm"
	}
	// A transaction left open by a stuck client would hold its row locks
	// forever; the server ends such sessions instead.
	if _, set := rp["idle_in_transaction_session_timeout"]; !set {
		rp["idle_in_transaction_session_timeout"] = "30000"
	}
	// Every statement of the store finds its rows through an index. A
	// prepared statement's plan is cached after a few runs, and one made
	// while a table was small (or before autovacuum came round to the dead
	// rows of a busy one) would scan the whole table for as long as the cache
	// keeps it, however large the table has grown. Scans are ruled out
	// instead; where one is the only way (reading the event_ids sequence), its
	// cost estimate becomes huge, so JIT compilation, useless for these
	// statements, is turned off too, lest it take that estimate at its word.
	// With scans ruled out the generic plan of a statement is as good as a
	// custom one, so statements are planned once per connection: left to
	// itself, PostgreSQL plans the multi-row statements of a group again at
	// every run (a plan that knows the length of the arrays always looks
	// cheaper), which cost more than running them.
	for k, v := range map[string]string{"enable_seqscan": "off", "jit": "off", "plan_cache_mode": "force_generic_plan"} {
		if _, set := rp[k]; !set {
			rp[k] = v
		}
	}
	if opts.Schema != "" {
		rp["search_path"] = pgx.Identifier{opts.Schema}.Sanitize()
	}
	s := &Store{
		opts:     opts,
		log:      opts.Logger,
		instance: rand.Text(),
		changes:  make(chan struct{}, 1),
		kickPub:  make(chan struct{}, 1),
		quit:     make(chan struct{}),
	}
	octx, cancel := context.WithTimeout(ctx, opts.OpTimeout)
	defer cancel()
	// Migrate on a connection of its own first, so that the pool never
	// holds a connection that looked up types before the tables existed.
	conn, err := pgx.ConnectConfig(octx, cfg.ConnConfig.Copy())
	if err != nil {
		return nil, unavailable(err)
	}
	defer closeConn(conn)
	s.schema = opts.Schema
	if s.schema == "" {
		if err := conn.QueryRow(octx, `SELECT current_schema()`).Scan(&s.schema); err != nil {
			return nil, unavailable(err)
		}
		rp["search_path"] = pgx.Identifier{s.schema}.Sanitize()
	}
	if err := migrate(octx, conn, s.schema); err != nil {
		return nil, fmt.Errorf("migrating schema %s: %w", s.schema, err)
	}
	s.channel = "dlm:" + s.schema
	if len(s.channel) > 63 { // NAMEDATALEN-1; longer names are truncated
		s.channel = s.channel[:63]
	}
	s.connCfg = cfg.ConnConfig.Copy()
	if s.pool, err = pgxpool.NewWithConfig(ctx, cfg); err != nil {
		return nil, err
	}
	if _, err := s.pool.Exec(octx, `INSERT INTO instances (id, seen_at) VALUES ($1, clock_timestamp())`, s.instance); err != nil {
		s.pool.Close()
		return nil, unavailable(err)
	}
	s.start(&s.bg, s.listen)
	s.start(&s.bg, s.publish)
	s.start(&s.bg, s.janitor)
	return s, nil
}

func (s *Store) start(wg *sync.WaitGroup, fn func()) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		fn()
	}()
}

// lockKey is the advisory lock key of purpose in schema.
func lockKey(purpose, schema string) int64 {
	h := fnv.New64a()
	h.Write([]byte("dlm\x00" + purpose + "\x00" + schema))
	return int64(h.Sum64())
}

// Close stops the background work, drops this instance's waiters (their
// requests end with the process) and closes the pool. Calls after Close fail
// with unavailable.
func (s *Store) Close() error {
	s.closeMu.Lock()
	if s.closed {
		s.closeMu.Unlock()
		return nil
	}
	s.closed = true
	s.closeMu.Unlock()
	close(s.quit)
	s.bg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.OpTimeout)
	defer cancel()
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `WITH d AS (DELETE FROM waiters WHERE instance = $1 RETURNING tenant)
			INSERT INTO waiter_usage (tenant, shard, n) SELECT tenant, pg_backend_pid(), -count(*) FROM d GROUP BY tenant
			ON CONFLICT (tenant, shard) DO UPDATE SET n = waiter_usage.n + excluded.n`, s.instance)
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `DELETE FROM instances WHERE id = $1`, s.instance)
		return err
	})
	s.pool.Close()
	if err != nil {
		s.log.Warn("dlm: could not drop this instance's waiters on close", "err", err)
	}
	return nil
}

var errClosed = dlm.Errorf(dlm.CodeUnavailable, "store is closed")

// call begins a call of the store, which fails if the store is closed or
// ctx has ended. It returns the call's context, bounded by OpTimeout but not
// ended with ctx, so that a caller that gives up cannot leave a transaction
// half-known; done ends the call.
func (s *Store) call(ctx context.Context) (octx context.Context, done func(), err error) {
	s.closeMu.RLock()
	if s.closed {
		s.closeMu.RUnlock()
		return nil, nil, errClosed
	}
	if err := ctx.Err(); err != nil {
		s.closeMu.RUnlock()
		return nil, nil, context.Cause(ctx)
	}
	octx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.opts.OpTimeout)
	return octx, func() {
		cancel()
		s.closeMu.RUnlock()
	}, nil
}

// changed is called after a commit that saved a change: the publisher tells
// the other instances.
func (s *Store) changed() { kick(s.kickPub) }

func kick(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// unavailable wraps a storage failure in the code callers act on.
func unavailable(err error) error {
	var de *dlm.Error
	if err == nil || errors.As(err, &de) || errors.Is(err, context.Canceled) {
		return err
	}
	return dlm.Unavailable(err)
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
