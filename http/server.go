package dlmhttp

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/dlmhq/dlm/engine"
)

// Server timeouts. There is deliberately no WriteTimeout and no ReadTimeout:
// a blocking acquire keeps its request open for up to the maximum wait (5
// minutes by default), and net/http would cut it short. Request bodies get
// their own read deadline (WithBodyTimeout).
const (
	// readHeaderTimeout bounds how long a client may take to send headers.
	readHeaderTimeout = 10 * time.Second
	// idleTimeout closes keep-alive connections that stay unused this long.
	idleTimeout = 2 * time.Minute
)

// Server serves the dlm API over HTTP on one listener and shuts down
// gracefully: see Shutdown.
type Server struct {
	engine   *engine.Engine
	log      *slog.Logger
	maxConns int
	srv      *http.Server
	ln       net.Listener
	tls      bool
	done     chan struct{} // closed when Serve returns
	err      error         // Serve's error, other than ErrServerClosed
}

// NewServer returns a Server for the API of e; opts configure its Handler.
func NewServer(e *engine.Engine, opts ...Option) *Server {
	h := NewHandler(e, opts...)
	return &Server{
		engine:   e,
		log:      h.log,
		maxConns: h.maxConns,
		srv: &http.Server{
			Handler:           h,
			ReadHeaderTimeout: readHeaderTimeout,
			MaxHeaderBytes:    headerReadLimit, // the handler refuses less: see maxHeaderBytes
			IdleTimeout:       idleTimeout,
			ConnContext:       connContext,
			ErrorLog:          slog.NewLogLogger(h.log.Handler(), slog.LevelWarn),
		},
		done: make(chan struct{}),
	}
}

// Listen binds addr (host:port; port 0 picks a free one) and starts serving
// in the background. Call it once.
func (s *Server) Listen(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	s.Serve(ln)
	return nil
}

// Serve starts serving plain HTTP on ln in the background, on at most as
// many connections at once as WithMaxConnections allows. Call it (or
// Listen, or ServeTLS) once.
func (s *Server) Serve(ln net.Listener) {
	ln = serving(ln, s.maxConns)
	s.ln = ln
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			s.err = err
		}
	}()
}

// ServeTLS is Serve for HTTPS only: every connection on ln must begin
// with a TLS handshake under cfg (typically tlscert.Pair.Config, whose
// certificate can be replaced while connections stay open). HTTP/2 is
// offered besides HTTP/1.1; WebSocket upgrades use HTTP/1.1, which clients
// ask for on their own (Go leaves WebSockets over HTTP/2, RFC 8441, off
// unless GODEBUG=http2xconnect=1, so clients never try them). A client speaking plain HTTP gets net/http's short
// 400 refusal, never an answer of the API.
func (s *Server) ServeTLS(ln net.Listener, cfg *tls.Config) {
	// The cap counts TCP connections under TLS. Watches on them write
	// through the WebSocket library: shared frames are for plain
	// connections only (connContext finds no servedConn under TLS).
	ln = serving(ln, s.maxConns)
	s.ln, s.tls = ln, true
	s.srv.TLSConfig = cfg
	go func() {
		defer close(s.done)
		if err := s.srv.ServeTLS(ln, "", ""); !errors.Is(err, http.ErrServerClosed) {
			s.err = err
		}
	}()
}

// Addr returns the address the server listens on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// URL returns the base URL of the server, e.g. http://127.0.0.1:7070, or
// https://… after ServeTLS.
func (s *Server) URL() string {
	if s.tls {
		return "https://" + s.ln.Addr().String()
	}
	return "http://" + s.ln.Addr().String()
}

// Done is closed when the server stops serving, after Shutdown or because
// the listener failed; Err then says why.
func (s *Server) Done() <-chan struct{} { return s.done }

// Err returns why the server stopped serving, or nil after Shutdown. Call it
// after Done is closed.
func (s *Server) Err() error { return s.err }

// Shutdown stops the server gracefully: it stops accepting connections,
// closes the engine (queued acquires are answered 503 unavailable; leases
// are kept), and waits for the requests in flight to finish until ctx ends;
// then it closes the connections that remain. The store stays open: the
// caller closes it afterwards.
func (s *Server) Shutdown(ctx context.Context) error {
	if s.ln == nil { // never listened
		s.engine.Close()
		return nil
	}
	shut := make(chan error, 1)
	go func() { shut <- s.srv.Shutdown(ctx) }()
	// http.Server.Shutdown has closed the listener or is about to; waiters
	// parked in the engine keep their requests busy until Close answers
	// them, so it runs alongside.
	s.engine.Close()
	err := <-shut
	if err != nil {
		s.log.Warn("requests still running at the end of shutdown; closing their connections", "err", err)
		s.srv.Close()
	}
	<-s.done
	return err
}
