package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/engine"
	dlmhttp "github.com/dlmhq/dlm/http"
	"github.com/dlmhq/dlm/internal/buildinfo"
	"github.com/dlmhq/dlm/internal/tlscert"
	"github.com/dlmhq/dlm/metrics"
	"github.com/dlmhq/dlm/postgres"
	"github.com/dlmhq/dlm/sqlite"
	"github.com/dlmhq/dlm/wire"
)

// commitObserver is a store that reports its commit batches, as
// sqlite.Store does, for the dlm_commit_* metrics.
type commitObserver interface {
	ObserveCommits(f func(ops int, d time.Duration))
}

// shutdownTimeout bounds a graceful shutdown: requests still running after
// it (they can only be slow storage, since queued acquires are answered at
// once) have their connections closed.
const shutdownTimeout = 10 * time.Second

// serveConfig is the configuration of dlm serve.
type serveConfig struct {
	listen              string
	dataDir             string
	postgres            string
	maxTTL              time.Duration
	maxWait             time.Duration
	maxLeasesPerTenant  int64
	maxWaitersPerTenant int64
	eventRetention      time.Duration
	eventRetentionCount int64
	logLevel            slog.Level
	logFormat           string
	pprofListen         string
	journalSizeMB       int64
	acceptDataLoss      bool
	tlsCert, tlsKey     string
	maxConnections      int64
}

// parseServeFlags reads the flags of dlm serve. Every flag has an environment
// twin; a flag given beats the environment, which beats the default.
func (m *Main) parseServeFlags(args []string) (*serveConfig, error) {
	fs := flag.NewFlagSet("dlm serve", flag.ContinueOnError)
	fs.SetOutput(m.Stderr)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: dlm serve [flags]\n\nRuns the dlm server. Every flag has an environment twin, shown in brackets;\na flag beats its variable. DLM_ADMIN_KEY, if set when the data is first\ncreated, becomes the admin key.\n\nFlags:")
		fs.PrintDefaults()
	}
	c := &serveConfig{}
	var env envDefaults
	env.getenv = m.Getenv
	fs.StringVar(&c.listen, "listen", env.str("DLM_LISTEN", "127.0.0.1:7070"), "address to listen on, host:port [DLM_LISTEN]")
	fs.StringVar(&c.dataDir, "data-dir", env.str("DLM_DATA_DIR", "./dlm-data"), "directory of the embedded SQLite store and the first start's credentials [DLM_DATA_DIR]")
	fs.StringVar(&c.postgres, "postgres", env.str("DLM_POSTGRES_URL", ""), "PostgreSQL URL, to run as one of many instances on one database [DLM_POSTGRES_URL]")
	fs.DurationVar(&c.maxTTL, "max-ttl", env.duration("DLM_MAX_TTL", 24*time.Hour), "longest lease TTL a client may ask for [DLM_MAX_TTL]")
	fs.DurationVar(&c.maxWait, "max-wait", env.duration("DLM_MAX_WAIT", 5*time.Minute), "longest a blocking acquire may wait [DLM_MAX_WAIT]")
	fs.Int64Var(&c.maxLeasesPerTenant, "max-leases-per-tenant", env.int("DLM_MAX_LEASES_PER_TENANT", 100_000), "most leases one tenant may hold [DLM_MAX_LEASES_PER_TENANT]")
	fs.Int64Var(&c.maxWaitersPerTenant, "max-waiters-per-tenant", env.int("DLM_MAX_WAITERS_PER_TENANT", 10_000), "most acquires one tenant may have queued [DLM_MAX_WAITERS_PER_TENANT]")
	fs.DurationVar(&c.eventRetention, "event-retention", env.duration("DLM_EVENT_RETENTION", 168*time.Hour), "how long events are kept [DLM_EVENT_RETENTION]")
	fs.Int64Var(&c.eventRetentionCount, "event-retention-count", env.int("DLM_EVENT_RETENTION_COUNT", 1_000_000), "most events kept [DLM_EVENT_RETENTION_COUNT]")
	level := env.str("DLM_LOG_LEVEL", "info")
	fs.StringVar(&level, "log-level", level, "debug, info, warn or error; debug logs every request [DLM_LOG_LEVEL]")
	fs.StringVar(&c.logFormat, "log-format", env.str("DLM_LOG_FORMAT", "text"), "text or json [DLM_LOG_FORMAT]")
	fs.StringVar(&c.pprofListen, "pprof-listen", env.str("DLM_PPROF_LISTEN", ""), "address to serve Go's profiles on (/debug/pprof/), without authentication; off when empty [DLM_PPROF_LISTEN]")
	fs.Int64Var(&c.journalSizeMB, "journal-size-mb", env.int("DLM_JOURNAL_SIZE_MB", 0), "size in MiB of each of the embedded store's two preallocated journals, when they are created; 0: 16, or an eighth of the free disk space if that is less [DLM_JOURNAL_SIZE_MB]")
	fs.Int64Var(&c.maxConnections, "max-connections", env.int("DLM_MAX_CONNECTIONS", dlmhttp.DefaultMaxConnections), "most client connections open at once; more wait to be accepted; 0: no cap [DLM_MAX_CONNECTIONS]")
	fs.BoolVar(&c.acceptDataLoss, "accept-data-loss", env.bool("DLM_ACCEPT_DATA_LOSS"), "start the embedded store even if its journal is damaged or missing, with what is intact (see RELIABILITY.md) [DLM_ACCEPT_DATA_LOSS]")
	fs.StringVar(&c.tlsCert, "tls-cert", env.str("DLM_TLS_CERT", ""), "PEM `file` of the server's certificate (and intermediates): serve HTTPS and WSS only, with --tls-key; both are read again on SIGHUP [DLM_TLS_CERT]")
	fs.StringVar(&c.tlsKey, "tls-key", env.str("DLM_TLS_KEY", ""), "PEM `file` of the certificate's private key [DLM_TLS_KEY]")
	if env.err != nil {
		return nil, env.err
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(m.Stderr, "dlm serve: unexpected argument %q\n", fs.Arg(0))
		return nil, errUsage
	}
	if err := c.logLevel.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: want debug, info, warn or error", level)
	}
	switch {
	case c.logFormat != "text" && c.logFormat != "json":
		return nil, fmt.Errorf("log format %q: want text or json", c.logFormat)
	case c.maxTTL < 100*time.Millisecond:
		return nil, fmt.Errorf("max TTL %v: must be at least 100ms, the shortest TTL", c.maxTTL)
	case c.maxWait <= 0:
		return nil, fmt.Errorf("max wait %v: must be positive", c.maxWait)
	case c.maxLeasesPerTenant <= 0 || c.maxWaitersPerTenant <= 0:
		return nil, errors.New("per-tenant maximums must be positive")
	case c.eventRetention <= 0 || c.eventRetentionCount <= 0:
		return nil, errors.New("event retention must be positive")
	case c.journalSizeMB < 0 || c.journalSizeMB > 0 && c.journalSizeMB < sqlite.MinJournalSize>>20:
		return nil, fmt.Errorf("journal size %d MiB: must be at least %d", c.journalSizeMB, sqlite.MinJournalSize>>20)
	case c.maxConnections < 0:
		return nil, fmt.Errorf("max connections %d: must not be negative (0: no cap)", c.maxConnections)
	case c.listen == "":
		return nil, errors.New("listen address is empty")
	case (c.tlsCert == "") != (c.tlsKey == ""):
		return nil, errors.New("TLS needs both --tls-cert and --tls-key (DLM_TLS_CERT, DLM_TLS_KEY)")
	case c.dataDir == "" && c.postgres == "":
		return nil, errors.New("data directory is empty")
	case m.Getenv("DLM_ADMIN_KEY") != "" && len(m.Getenv("DLM_ADMIN_KEY")) < engine.MinAdminKeyLen:
		return nil, fmt.Errorf("DLM_ADMIN_KEY: must be at least %d characters", engine.MinAdminKeyLen)
	}
	return c, nil
}

// envDefaults reads flag defaults from the environment and keeps the first
// malformed value's error.
type envDefaults struct {
	getenv func(string) string
	err    error
}

func (e *envDefaults) str(name, def string) string {
	if v := e.getenv(name); v != "" {
		return v
	}
	return def
}

func (e *envDefaults) bool(name string) bool {
	v := e.getenv(name)
	if v == "" {
		return false
	}
	b, err := strconv.ParseBool(v)
	if err != nil && e.err == nil {
		e.err = fmt.Errorf("%s=%q: want true or false", name, v)
	}
	return b
}

func (e *envDefaults) duration(name string, def time.Duration) time.Duration {
	v := e.getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil && e.err == nil {
		e.err = fmt.Errorf("%s=%q: not a duration like 30s or 24h", name, v)
	}
	return d
}

func (e *envDefaults) int(name string, def int64) int64 {
	v := e.getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.ParseInt(strings.ReplaceAll(v, "_", ""), 10, 64)
	if err != nil && e.err == nil {
		e.err = fmt.Errorf("%s=%q: not an integer", name, v)
	}
	return n
}

func (c *serveConfig) logger(w io.Writer) *slog.Logger {
	o := &slog.HandlerOptions{Level: c.logLevel}
	if c.logFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, o))
	}
	return slog.New(slog.NewTextHandler(w, o))
}

// runServe runs the server until ctx ends or SIGINT or SIGTERM arrives, then
// shuts down gracefully: no new requests, queued acquires answered 503,
// requests in flight finished, leases kept. It returns nil after a clean
// shutdown.
func (m *Main) runServe(ctx context.Context, args []string) error {
	c, err := m.parseServeFlags(args)
	if err != nil {
		return err
	}
	log := c.logger(m.Stderr)

	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	// Take the addresses before anything else: a start that cannot listen
	// must fail before it creates a data directory or prints keys.
	ln, err := net.Listen("tcp", c.listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	defer ln.Close() // after Serve, Shutdown has closed it already
	var pair *tlscert.Pair
	if c.tlsCert != "" {
		if pair, err = tlscert.Load(c.tlsCert, c.tlsKey); err != nil {
			return err
		}
	}
	var pprofLn net.Listener
	if c.pprofListen != "" {
		if pprofLn, err = net.Listen("tcp", c.pprofListen); err != nil {
			return fmt.Errorf("pprof listen: %w", err)
		}
		defer pprofLn.Close()
	}
	if err := os.MkdirAll(c.dataDir, 0o700); err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	opts := engine.Options{
		MaxTTL:              c.maxTTL,
		MaxWait:             c.maxWait,
		MaxLeasesPerTenant:  c.maxLeasesPerTenant,
		MaxWaitersPerTenant: c.maxWaitersPerTenant,
		EventRetention:      c.eventRetention,
		EventRetentionCount: c.eventRetentionCount,
		Logger:              log,
	}
	var store dlm.Store
	dbPath := filepath.Join(c.dataDir, "dlm.db")
	if c.postgres != "" {
		pg, err := postgres.Open(ctx, c.postgres, postgres.Options{Logger: log})
		if err != nil {
			return fmt.Errorf("open PostgreSQL store: %w", err)
		}
		store, dbPath = pg, "postgres"
		// Grants made by other instances wake parked acquires through the
		// event feed; this poll only bounds the delay if a notification
		// is lost.
		opts.WaitPoll = time.Second
	} else {
		if err := checkCredentialsAlone(dbPath, c.dataDir); err != nil {
			return err
		}
		sq, err := sqlite.OpenWith(dbPath, sqlite.Options{JournalSize: c.journalSizeMB << 20, AcceptDataLoss: c.acceptDataLoss})
		if err != nil {
			return fmt.Errorf("open store: %w", err)
		}
		store = sq
	}
	defer func() {
		if err := store.Close(); err != nil {
			log.Error("closing the store failed", "err", err)
		}
	}()
	met := metrics.New(metrics.WithLogger(log))
	opts.Observer = met
	e := engine.New(store, opts)
	met.SetEngine(e)
	if co, ok := store.(commitObserver); ok {
		co.ObserveCommits(met.ObserveCommit)
	}
	srv := dlmhttp.NewServer(e, dlmhttp.WithLogger(log),
		dlmhttp.WithObserver(met.ObserveRequest),
		dlmhttp.WithFailedAuth(met.ObserveFailedAuth),
		dlmhttp.WithRoute("GET", "/metrics", met.Handler()),
		dlmhttp.WithMaxConnections(int(c.maxConnections)))
	if err := m.bootstrap(ctx, e, c.dataDir, log); err != nil {
		e.Close()
		return err
	}
	if pprofLn != nil {
		servePprof(ctx, pprofLn, log)
	}
	paceGC(ctx)
	if pair != nil {
		reloadOnHangup(ctx, pair, log)
		srv.ServeTLS(ln, pair.Config())
		log.Info("serving HTTPS", "cert_subject", pair.Leaf().Subject.String(), "cert_expires", pair.Leaf().NotAfter)
	} else {
		srv.Serve(ln)
	}
	log.Info("serving", "addr", srv.Addr().String(), "store", dbPath, "version", buildinfo.Get().Version)
	fmt.Fprintf(m.Stdout, "dlm: listening on %s\n", srv.URL())
	fmt.Fprintf(m.Stdout, "dlm: dashboard at %s/\n", srv.URL())

	select {
	case <-ctx.Done():
		stop() // a second signal now ends the process at once
		log.Info("shutting down", "cause", context.Cause(ctx))
	case <-srv.Done():
		log.Error("server stopped", "err", srv.Err())
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	err = srv.Shutdown(sctx)
	if serr := srv.Err(); serr != nil {
		return fmt.Errorf("serve: %w", serr)
	}
	if err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	log.Info("stopped")
	return nil
}

// reloadOnHangup reads the certificate pair again on every SIGHUP until
// ctx ends. Handshakes after a reload present the new pair; connections
// already open keep theirs. A pair that does not load is logged and the
// one in use stays, so a botched renewal never takes the server down.
// Without TLS, SIGHUP keeps its default action.
func reloadOnHangup(ctx context.Context, pair *tlscert.Pair, log *slog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		defer signal.Stop(hup)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				if err := pair.Reload(); err != nil {
					log.Error("reloading the TLS certificate failed; serving the one loaded before", "err", err)
					continue
				}
				log.Info("reloaded the TLS certificate", "cert_subject", pair.Leaf().Subject.String(), "cert_expires", pair.Leaf().NotAfter)
			}
		}
	}()
}

// checkCredentialsAlone refuses to start when the database is gone but the
// credentials of an earlier first start are still there: starting would
// make new keys over them, and every key that clients hold would stop
// working. (The store itself refuses when its journals outlive it.)
func checkCredentialsAlone(dbPath, dataDir string) error {
	if st, err := os.Stat(dbPath); err == nil && st.Size() > 0 {
		return nil
	}
	if _, err := os.Stat(dbPath + "-wal"); err == nil {
		return nil
	}
	creds := filepath.Join(dataDir, wire.CredentialsFile)
	if _, err := os.Stat(creds); err != nil {
		return nil
	}
	return fmt.Errorf("%s is missing or empty, but %s from an earlier start is there: the data was lost. "+
		"dlm refuses to start, since it would make new keys and refuse every key in use: restore the data directory from a backup, "+
		"or remove %s to start afresh (see RELIABILITY.md, \"Damage and abuse\")", dbPath, creds, creds)
}

// bootstrap makes the admin key and the default tenant's key on first start,
// stores them in the data directory (0600) and prints them once.
func (m *Main) bootstrap(ctx context.Context, e *engine.Engine, dataDir string, log *slog.Logger) error {
	adminKey := m.Getenv("DLM_ADMIN_KEY")
	creds, err := e.Bootstrap(ctx, adminKey)
	if err != nil {
		return fmt.Errorf("bootstrap: %w", err)
	}
	if creds == nil {
		if adminKey != "" {
			log.Warn("DLM_ADMIN_KEY is ignored: the store has its admin key already")
		}
		return nil
	}
	path, err := filepath.Abs(filepath.Join(dataDir, wire.CredentialsFile))
	if err != nil {
		path = filepath.Join(dataDir, wire.CredentialsFile)
	}
	saved := wire.Credentials{AdminKey: creds.AdminKey, Tenant: creds.Tenant, TenantKey: creds.TenantKey, TenantKeyID: creds.TenantKeyID}
	shown := creds.AdminKey
	if adminKey != "" {
		// The operator has it already; a copy on disk would only be
		// one more place to steal it from.
		saved.AdminKey, shown = "", "(the value of DLM_ADMIN_KEY, not saved)"
	}
	werr := writeCredentials(path, &saved)
	fmt.Fprintf(m.Stdout, "dlm: first start: created these keys; they are shown only now.\n")
	fmt.Fprintf(m.Stdout, "  %-22s %s\n", "admin key:", shown)
	fmt.Fprintf(m.Stdout, "  %-22s %s  (key id %s)\n", fmt.Sprintf("tenant %q key:", creds.Tenant), creds.TenantKey, creds.TenantKeyID)
	if werr != nil {
		return fmt.Errorf("saving the credentials (copy them from above): %w", werr)
	}
	fmt.Fprintf(m.Stdout, "dlm: saved to %s (mode 0600)\n", path)
	return nil
}

// writeCredentials writes creds to path with mode 0600, atomically: the file
// is either complete or absent.
func writeCredentials(path string, creds *wire.Credentials) error {
	b, err := json.MarshalIndent(creds, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".credentials-*.json")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// servePprof serves net/http/pprof's handlers on ln until ctx ends. They
// sit on their own listener, away from the API, so that exposing the API
// never exposes them.
func servePprof(ctx context.Context, ln net.Listener, log *slog.Logger) {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("pprof server stopped", "err", err)
		}
	}()
	log.Info("serving profiles", "addr", ln.Addr().String())
}
