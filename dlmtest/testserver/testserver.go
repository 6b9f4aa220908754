// Package testserver starts a real dlm server for tests: a SQLite file in a
// temporary directory, the engine, and the HTTP API on 127.0.0.1:0.
//
// It lives apart from dlmtest's fakes so that the engine's and stores' own
// tests can use those fakes without an import cycle through the server.
package testserver

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/dlmhq/dlm/engine"
	dlmhttp "github.com/dlmhq/dlm/http"
	"github.com/dlmhq/dlm/sqlite"
)

// Options configure New. A nil *Options means all defaults.
type Options struct {
	// Engine configures the engine: caps, maximum TTL and wait. Its Logger
	// defaults to Logger.
	Engine engine.Options
	// Dir is the data directory. Default: a fresh t.TempDir(). Pass the Dir
	// of a closed Server to restart on the same data.
	Dir string
	// AdminKey, if set, becomes the admin key of a fresh store (as
	// DLM_ADMIN_KEY does). Default: a generated key.
	AdminKey string
	// Logger receives the server's logs. Default: discarded.
	Logger *slog.Logger
	// Listener, if set, is where the server accepts connections. Default:
	// a fresh listener on 127.0.0.1:0.
	Listener net.Listener
	// Handler are extra options of the HTTP handler, after the logger:
	// observers and extra routes such as /metrics.
	Handler []dlmhttp.Option
}

// Server is a running dlm server.
type Server struct {
	URL         string // base URL, e.g. http://127.0.0.1:41234
	AdminKey    string
	TenantKey   string // a key of the tenant "default"
	TenantKeyID string
	Dir         string // the data directory
	Engine      *engine.Engine
	Store       *sqlite.Store
	HTTP        *dlmhttp.Server

	closeOnce sync.Once
	t         testing.TB
}

// credsFile keeps the first start's keys in Dir, so that a restart on the
// same data knows them too.
const credsFile = "testserver-credentials.json"

// New starts a server and stops it (gracefully) when the test ends.
func New(t testing.TB, opts *Options) *Server {
	t.Helper()
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.Dir == "" {
		o.Dir = t.TempDir()
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.Engine.Logger == nil {
		o.Engine.Logger = o.Logger
	}
	store, err := sqlite.Open(filepath.Join(o.Dir, "dlm.db"))
	if err != nil {
		t.Fatalf("testserver: open store: %v", err)
	}
	e := engine.New(store, o.Engine)
	s := &Server{Dir: o.Dir, Engine: e, Store: store, t: t}
	ctx := context.Background()
	creds, err := e.Bootstrap(ctx, o.AdminKey)
	if err == nil {
		creds, err = keep(o.Dir, creds)
	}
	if err != nil {
		e.Close()
		store.Close()
		t.Fatalf("testserver: bootstrap: %v", err)
	}
	s.AdminKey, s.TenantKey, s.TenantKeyID = creds.AdminKey, creds.TenantKey, creds.TenantKeyID
	s.HTTP = dlmhttp.NewServer(e, append([]dlmhttp.Option{dlmhttp.WithLogger(o.Logger)}, o.Handler...)...)
	if o.Listener == nil {
		if o.Listener, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			e.Close()
			store.Close()
			t.Fatalf("testserver: listen: %v", err)
		}
	}
	s.HTTP.Serve(o.Listener)
	s.URL = s.HTTP.URL()
	t.Cleanup(s.Close)
	return s
}

// keep saves fresh credentials in dir, or loads the saved ones when the
// store was bootstrapped before (creds nil).
func keep(dir string, creds *engine.Credentials) (*engine.Credentials, error) {
	path := filepath.Join(dir, credsFile)
	if creds != nil {
		b, err := json.Marshal(creds)
		if err != nil {
			return nil, err
		}
		return creds, os.WriteFile(path, b, 0o600)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	creds = &engine.Credentials{}
	return creds, json.Unmarshal(b, creds)
}

// Close stops the server as SIGTERM does: queued acquires get 503 and
// leases are kept. It then closes the store. Calls after the first do
// nothing.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.HTTP.Shutdown(ctx); err != nil {
			s.t.Errorf("testserver: shutdown: %v", err)
		}
		if err := s.Store.Close(); err != nil {
			s.t.Errorf("testserver: close store: %v", err)
		}
	})
}
