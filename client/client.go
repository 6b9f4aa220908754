// Package client is the Go SDK of the dlm lock service (SPEC §5).
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
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/dlmhq/dlm"
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
	// server for; longer waits are split into several requests (and lose
	// their place in the queue at each split). It must not exceed the
	// server's --max-wait. Default: 5m, the server's default maximum.
	MaxRequestWait time.Duration
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
	maxWait        time.Duration
}

// New returns a client for the server at baseURL (e.g.
// "http://127.0.0.1:7070") that authenticates with apiKey. It does no I/O;
// it fails only if baseURL is not an http or https URL.
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
		maxWait:        opts.MaxRequestWait,
	}
	if c.hc == nil {
		c.hc = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
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
	if c.maxWait <= 0 {
		c.maxWait = 5 * time.Minute
	}
	return c, nil
}

// Close closes the client's idle connections. It does not release locks;
// the client remains usable.
func (c *Client) Close() { c.hc.CloseIdleConnections() }

// FromEnv returns a client configured from the environment: DLM_URL (default
// DefaultURL) and DLM_KEY. opts is as for New.
func FromEnv(opts *Options) (*Client, error) {
	u := os.Getenv("DLM_URL")
	if u == "" {
		u = DefaultURL
	}
	return New(u, os.Getenv("DLM_KEY"), opts)
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
