// Package sqlite is the embedded dlm.Store: one SQLite file in WAL mode,
// through the pure-Go modernc.org/sqlite driver (no cgo).
//
// The live locks are kept in memory (memTable), which is the state: Load
// answers from it without I/O. Commit makes a batch durable with one append
// and fdatasync of the journal (see journal), and only then applies it to
// memory. A goroutine, the applier, writes the committed batches into
// SQLite on the write connection afterwards (see apply.go). Reads run on a
// pool of read-only connections; they wait for the applier to reach the
// last batch committed, so they see every acknowledged change and nothing
// that is not durable.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/lograte"
	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// Store is a dlm.Store on one SQLite file.
type Store struct {
	path      string
	opts      Options
	clock     dlm.Clock
	log       *slog.Logger
	logs      lograte.Limiter // the restart's repeated failures
	restarted time.Time       // the last restart of a broken committer (restart)
	wdb       *sql.DB         // one connection, the committer's
	rdb       *sql.DB         // read-only pool
	lock      *os.File

	// mu is the writer's: a loaded batch holds it until it commits or
	// aborts, and direct writes, restarts and Close take it too.
	mu       sync.Mutex
	c        *committer
	lazy     *time.Timer // syncs lazy batches no later batch synced (see syncLazy)
	closed   atomic.Bool
	closeErr error
	progress atomic.Pointer[progress] // the committer's, for reads

	commits atomic.Pointer[func(ops int, d time.Duration)] // see ObserveCommits
}

var _ dlm.Store = (*Store)(nil)

// Options configure a Store. The zero value of each field means its default.
type Options struct {
	// JournalSize is the preallocated size of each of the two journals.
	// Default DefaultJournalSize, or less when the filesystem has little
	// room: at most an eighth of its free space, and no less than
	// MinJournalSize. It applies when a journal is created.
	JournalSize int64
	// Logger receives the store's operational logs. Default slog.Default().
	Logger *slog.Logger
	// AcceptDataLoss opens a store whose journals are damaged or missing
	// with what is intact, instead of refusing with a *DamageError. The
	// batches behind the damage are lost; fencing tokens still grow, since
	// a process grants no token below its floor (dlm.TokenFloor).
	AcceptDataLoss bool
	// Clock is the store's notion of the present (Batch.Now, ReadTx.Now).
	// Default dlm.SystemClock{}.
	Clock dlm.Clock
}

// Open opens (creating if needed) the database file at path with default
// Options.
func Open(path string) (*Store, error) { return OpenWith(path, Options{}) }

// OpenWith opens (creating if needed) the database file at path, migrates
// its schema and recovers the journals. The file is locked so that no other
// process can open it at the same time; waiters left by an earlier process
// are dropped, since the requests that queued them died with it.
//
// It refuses, with a *DamageError naming the file, to open a store whose
// journal is damaged, missing or cut short, or whose database is empty
// beside existing journals: either would silently lose acknowledged
// changes (see journal). opts.AcceptDataLoss overrides that.
func OpenWith(path string, opts Options) (*Store, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	lock, err := os.OpenFile(path+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		return nil, fmt.Errorf("%s is in use by another process: %w", path, err)
	}
	if err := makePrivate(path); err != nil {
		lock.Close()
		return nil, err
	}
	s := &Store{path: path, opts: opts, lock: lock, clock: opts.Clock}
	if s.clock == nil {
		s.clock = dlm.SystemClock{}
	}
	if s.log = opts.Logger; s.log == nil {
		s.log = slog.Default()
	}
	if s.opts.JournalSize == 0 {
		s.opts.JournalSize = journalSizeFor(filepath.Dir(path))
	}
	created, err := s.open(path)
	if err == nil && created && !opts.AcceptDataLoss {
		err = checkNoJournals(path)
	}
	if err != nil {
		s.closeDBs()
		return nil, err
	}
	if s.c, err = s.newCommitter(); err != nil {
		s.closeDBs()
		return nil, err
	}
	s.lazy = time.AfterFunc(time.Hour, s.syncLazy)
	s.lazy.Stop()
	return s, nil
}

// makePrivate makes the database file and SQLite's -wal and -shm files
// beside it mode 0600, whatever the umask: they hold every lease and the
// hashes of the API keys, and like the journals and the credentials only
// their owner may read them. SQLite creates -wal and -shm with the mode of
// the database file, so creating that one first settles all three; files
// an older version left more open are narrowed.
func makePrivate(path string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		if err := os.Chmod(p, 0o600); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err

		}
	}
	return nil
}

// journalSizeFor returns DefaultJournalSize, or an eighth of the free space
// of dir's filesystem if that is less (but at least MinJournalSize), so
// that a small disk can still start.
func journalSizeFor(dir string) int64 {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return DefaultJournalSize
	}
	free := int64(st.Bavail) * st.Bsize
	return max(MinJournalSize, min(DefaultJournalSize, free/8))
}

// checkNoJournals fails if a database just created has journals beside it:
// they belong to a database that was there before and is now lost.
func checkNoJournals(path string) error {
	for _, j := range journalPaths(path) {
		if _, err := os.Stat(j); err == nil {
			return &DamageError{File: path, Problem: "the database is empty, but the journal " + filepath.Base(j) +
				" beside it belongs to one that held data: the database was lost, truncated or replaced"}
		}
	}
	return nil
}

func journalPaths(path string) []string { return []string{path + ".commitlog", path + ".commitlog2"} }

// newCommitter starts a committer on the store's file, and makes its
// progress the one reads wait on.
func (s *Store) newCommitter() (*committer, error) {
	c, err := newCommitter(context.Background(), s.wdb, s.rdb, s.path, s.opts)
	if err != nil {
		return nil, err
	}
	s.progress.Store(c.progress)
	return c, nil
}

// ObserveCommits makes the store call f after each batch it committed
// durably, with the number of saves the batch carried and the time from
// its Load to its durable commit. f runs in Commit, so it must be quick and
// must not block; it may be set at any time, and nil stops the calls.
func (s *Store) ObserveCommits(f func(ops int, d time.Duration)) {
	if f == nil {
		s.commits.Store(nil)
		return
	}
	s.commits.Store(&f)
}

// open opens the database and migrates its schema; created reports whether
// it had none before.
func (s *Store) open(path string) (created bool, err error) {
	// SQLite does not fsync its commits (synchronous=NORMAL): the journal
	// makes each batch durable before the applier writes it (see journal),
	// and SQLite is synced whenever the journal starts over. Its own
	// checkpoints run every 10,000 pages (40 MiB) of log rather than 1,000,
	// so that the applier stalls less often. The log file is kept at up to
	// 64 MiB between checkpoints, so its blocks are reused, not reallocated.
	dsn := "file:" + url.PathEscape(path) + "?_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)" +
		"&_pragma=busy_timeout(10000)&_pragma=wal_autocheckpoint(10000)&_pragma=journal_size_limit(67108864)&_pragma=temp_store(MEMORY)"
	if s.wdb, err = sql.Open("sqlite", dsn); err != nil {
		return false, err
	}
	s.wdb.SetMaxOpenConns(1)
	s.wdb.SetConnMaxIdleTime(0)
	s.wdb.SetConnMaxLifetime(0)
	if s.rdb, err = sql.Open("sqlite", dsn+"&_pragma=query_only(1)"); err != nil {
		return false, err
	}
	s.rdb.SetMaxOpenConns(8)
	s.rdb.SetMaxIdleConns(8)
	ctx := context.Background()
	conn, err := s.wdb.Conn(ctx)
	if err != nil {
		return false, err
	}
	defer conn.Close()
	if created, err = migrate(ctx, conn); err != nil {
		return false, fmt.Errorf("migrating %s: %w", path, err)
	}
	return created, nil
}

// Close waits for the batch in flight, makes the lazy batches durable, lets
// the applier finish and closes the file.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		return s.closeErr
	}
	s.closed.Store(true)
	s.lazy.Stop()
	s.c.syncLazy()
	s.c.stopApplier()
	s.c.close()
	s.closeErr = s.closeDBs()
	return s.closeErr
}

// writer takes the writer (mu) for a batch or a direct write, replacing a
// broken committer first if it is time to (see restart). It returns with
// mu held, unless it fails.
func (s *Store) writer() (*committer, error) {
	s.mu.Lock()
	if s.closed.Load() {
		s.mu.Unlock()
		return nil, errClosed
	}
	s.c = s.restart(s.c)
	if err := s.c.broken; err != nil {
		s.mu.Unlock()
		return nil, unavailable(err)
	}
	return s.c, nil
}

// syncLazy makes the lazy batches durable once lazyDelay has passed
// without a later batch doing it.
func (s *Store) syncLazy() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed.Load() {
		s.c.syncLazy()
	}
}

func (s *Store) closeDBs() error {
	var errs []error
	for _, db := range []*sql.DB{s.rdb, s.wdb} {
		if db != nil {
			errs = append(errs, db.Close())
		}
	}
	errs = append(errs, s.lock.Close())
	return errors.Join(errs...)
}

var errClosed = dlm.Errorf(dlm.CodeUnavailable, "store is closed")

// View implements dlm.Store on a read-only connection. It first waits for
// the applier to write every batch acknowledged so far, so that a read sees
// whatever any caller has been told.
func (s *Store) View(ctx context.Context, fn func(dlm.ReadTx) error) error {
	if s.closed.Load() {
		return errClosed
	}
	p := s.progress.Load()
	if p.failed() != nil {
		// Reads come back by themselves too, not only with the next write.
		if _, err := s.writer(); err == nil {
			s.mu.Unlock()
		}
		p = s.progress.Load()
	}
	if err := p.wait(ctx, p.answered.Load()); err != nil {
		return err
	}
	now := p.readNow(s.clock)
	tx, err := s.rdb.BeginTx(ctx, nil)
	if err != nil {
		return unavailable(err)
	}
	defer tx.Rollback()
	return fn(&readTx{q: tx, now: now})
}

// unavailable wraps a storage failure in the code callers act on. It passes
// nil, *dlm.Errors and context errors through.
func unavailable(err error) error {
	var de *dlm.Error
	if err == nil || errors.As(err, &de) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return dlm.Unavailable(err)
}
