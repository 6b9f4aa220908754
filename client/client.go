// Package client is the Go SDK of the dlm lock service (README).
//
// A Client talks to one dlm server over its JSON API. Acquire returns a *Lock
// whose lease renews itself in the background and which signals the moment
// the lease is lost or can no longer be proven held. A lock can vanish at any
// time (a force-release, a network partition, a paused process), so code that
// writes to shared state must pass the lock's fencing token along and have
// the downstream system reject stale tokens: the token, not the lock, is what
// makes a write safe.
//
// Errors returned by the server are *dlm.Error values; test them with
// errors.Is against the dlm sentinels (dlm.ErrLockConflict,
// dlm.ErrWaitTimeout, dlm.ErrLeaseEnded, dlm.ErrUnauthenticated, ...) or
// errors.As to read Holders and Reason.
//
// The package depends on the root dlm package only, never on the server.
package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/wire"
)

// DefaultURL is where FromEnv looks when DLM_URL is not set: the address an
// embedded `dlm serve` listens on by default.
const DefaultURL = "http://127.0.0.1:7070"

// CallerTenant is the Key.Namespace of leases, events and locks that the
// client returns in the tenant scope: the API answers in terms of scopes and
// does not name the caller's tenant. Global-scope values carry
// dlm.GlobalNamespace. "~" can never be a tenant name.
const CallerTenant = "~"

// Scope selects the namespace of a lock.
type Scope string

// Scopes. The zero Scope means ScopeTenant.
const (
	ScopeTenant Scope = "tenant" // the caller's tenant
	ScopeGlobal Scope = "global" // one namespace shared by every tenant
)

func (s Scope) wire() (string, error) {
	switch s {
	case "", ScopeTenant:
		return string(ScopeTenant), nil
	case ScopeGlobal:
		return string(ScopeGlobal), nil
	}
	return "", dlm.Invalid("scope", "must be %q or %q, not %q", ScopeTenant, ScopeGlobal, string(s))
}

// Options configures a Client. The zero value of every field means its
// default, so a nil *Options is all defaults.
type Options struct {
	// HTTPClient sends the requests. Default: a client on a clone of
	// http.DefaultTransport with no overall timeout (the client bounds
	// each request itself, see RequestTimeout).
	HTTPClient *http.Client
	// CACertFile names a PEM file of certificates to trust for an
	// https:// server besides the system's roots: the CA of a server with
	// a private or self-signed certificate. It applies to the default
	// HTTPClient; with one of your own, New fails if this is set too.
	// Default: the system's roots only. FromEnv takes it from DLM_CA_CERT.
	CACertFile string
	// HolderID names this process in lock views and events when an
	// acquire does not name a holder. Default: DefaultHolderID().
	HolderID string
	// RequestTimeout bounds one attempt of one request, on top of the
	// time the server was asked to wait for a lock. Default: 10s.
	RequestTimeout time.Duration
	// RetryTimeout bounds how long one call keeps retrying transient
	// failures (network errors and 502/503/504) before it gives up and
	// returns the last error. Default: 30s, long enough to ride out a
	// server restart.
	RetryTimeout time.Duration
	// MaxRequestWait is the longest wait one acquire request asks the
	// server for; longer waits take several requests, which keep their
	// place in the queue (see Acquire). Default: 5m, the server's default
	// --max-wait. A server that allows less says so when it refuses a
	// longer wait, and the client keeps to its limit from then on.
	MaxRequestWait time.Duration
	// HTTPOnly keeps the client to plain HTTP requests. By default a
	// client that holds locks opens one session (a WebSocket, GET
	// /v1/session) for all of them: its locks are renewed together in one
	// message per interval and learn of their loss the moment the server
	// pushes it. Servers without sessions are spoken to over HTTP anyway.
	HTTPOnly bool
}

// Client is a connection to one dlm server with one API key. It is safe for
// concurrent use.
type Client struct {
	base           *url.URL
	key            string
	hc             *http.Client
	holder         string
	requestTimeout time.Duration
	retryTimeout   time.Duration
	maxWait        atomic.Int64 // nanoseconds: MaxRequestWait, or the server's lower limit once learned
	sess           *session     // nil with HTTPOnly
}

// New returns a client for the server at baseURL (e.g.
// "http://127.0.0.1:7070", or https://… for a server with TLS) that
// authenticates with apiKey. It does no network I/O; it fails if baseURL is
// not an http or https URL, or if opts.CACertFile cannot be read.
func New(baseURL, apiKey string, opts *Options) (*Client, error) {
	u, err := url.Parse(strings.TrimRight(baseURL, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("client: base URL %q: want http://host:port or https://host:port", baseURL)
	}
	if opts == nil {
		opts = &Options{}
	}
	c := &Client{
		base:           u,
		key:            apiKey,
		hc:             opts.HTTPClient,
		holder:         opts.HolderID,
		requestTimeout: opts.RequestTimeout,
		retryTimeout:   opts.RetryTimeout,
	}
	switch {
	case c.hc != nil && opts.CACertFile != "":
		return nil, errors.New("client: CACertFile applies to the default HTTPClient: set your client's TLS roots instead")
	case c.hc == nil:
		tr := http.DefaultTransport.(*http.Transport).Clone()
		if opts.CACertFile != "" {
			pool, err := CertPool(opts.CACertFile)
			if err != nil {
				return nil, err
			}
			tr.TLSClientConfig = &tls.Config{RootCAs: pool}
		}
		c.hc = &http.Client{Transport: tr}
	}
	if c.holder == "" {
		c.holder = DefaultHolderID()
	}
	if c.requestTimeout <= 0 {
		c.requestTimeout = 10 * time.Second
	}
	if c.retryTimeout <= 0 {
		c.retryTimeout = 30 * time.Second
	}
	maxWait := opts.MaxRequestWait
	if maxWait <= 0 {
		maxWait = 5 * time.Minute
	}
	c.maxWait.Store(int64(maxWait))
	if !opts.HTTPOnly {
		c.sess = newSession(c)
	}
	return c, nil
}

// CertPool returns the system's trusted roots (none if the system has no
// pool) plus the certificates of the PEM file caFile.
func CertPool(caFile string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("client: CA certificates: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("client: CA certificates: no PEM certificate in %s", caFile)
	}
	return pool, nil
}

// Close closes the client's session and idle connections. It does not
// release locks, except those acquired with ReleaseOnClose, which the server
// releases (their Locks are lost). The client remains usable: the next call
// that needs a session opens a new one.
func (c *Client) Close() {
	if c.sess != nil {
		c.sess.close()
	}
	c.hc.CloseIdleConnections()
}

// DefaultDataDir is where FromEnv and the dlm command line look for the
// credentials of a local `dlm serve` when DLM_DATA_DIR is not set: the data
// directory the server uses by default.
const DefaultDataDir = "dlm-data"

// FromEnv returns a client configured from the environment: DLM_URL (default
// DefaultURL, or an https:// URL), DLM_KEY, and DLM_CA_CERT (see
// Options.CACertFile) unless opts sets CACertFile or HTTPClient. Without DLM_KEY it takes the default tenant's key
// from the credentials that a local `dlm serve` saved in its data directory,
// DLM_DATA_DIR (default DefaultDataDir), as the dlm command line does. It
// fails if it finds no key that way either. opts is as for New.
func FromEnv(opts *Options) (*Client, error) {
	u := os.Getenv("DLM_URL")
	if u == "" {
		u = DefaultURL
	}
	key := os.Getenv("DLM_KEY")
	if key == "" {
		dir := os.Getenv("DLM_DATA_DIR")
		if dir == "" {
			dir = DefaultDataDir
		}
		creds, err := ReadCredentials(dir)
		if err != nil {
			return nil, err
		}
		key = creds.TenantKey
	}
	if ca := os.Getenv("DLM_CA_CERT"); ca != "" && (opts == nil || opts.CACertFile == "" && opts.HTTPClient == nil) {
		o := Options{}
		if opts != nil {
			o = *opts
		}
		o.CACertFile, opts = ca, &o
	}
	return New(u, key, opts)
}

// ReadCredentials reads the credentials that the first start of `dlm serve`
// saved in the data directory dir (wire.CredentialsFile). The error of a
// missing file says how else to give a key.
func ReadCredentials(dir string) (*wire.Credentials, error) {
	path := filepath.Join(dir, wire.CredentialsFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("no API key: set DLM_KEY or --key, or point DLM_DATA_DIR (--data-dir) at the data directory of a local dlm serve (%s does not exist)", path)
	}
	if err != nil {
		return nil, fmt.Errorf("read credentials: %w", err)
	}
	var c wire.Credentials
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("read credentials %s: %w", path, err)
	}
	if c.TenantKey == "" {
		return nil, fmt.Errorf("read credentials %s: no tenant_key", path)
	}
	return &c, nil
}

// DefaultHolderID returns "hostname:pid", the holder id used when none is
// configured.
func DefaultHolderID() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		h = "unknown"
	}
	return fmt.Sprintf("%s:%d", h, os.Getpid())
}

// ctxErr returns why a call stopped when ctx ended: the last error it had
// seen, if any, joined with ctx's error and cause.
func ctxErr(ctx context.Context, last error) error {
	errs := []error{last, ctx.Err()}
	if cause := context.Cause(ctx); cause != ctx.Err() {
		errs = append(errs, cause)
	}
	return errors.Join(errs...)
}
