// Package tlscert serves a TLS certificate pair from files that can be
// replaced while the server runs: Reload reads them again, and every TLS
// handshake after it presents the new pair. Connections made before keep
// the session they negotiated, so a reload drops none of them. It knows
// nothing of HTTP: any protocol served over the tls.Config works unchanged,
// WebSockets included.
package tlscert

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"sync/atomic"
)

// Pair is a certificate and its key read from two PEM files. It is safe for
// concurrent use.
type Pair struct {
	certFile, keyFile string
	cur               atomic.Pointer[tls.Certificate]
}

// Load reads the pair from certFile (the certificate, then any
// intermediates, PEM) and keyFile (its private key, PEM).
func Load(certFile, keyFile string) (*Pair, error) {
	p := &Pair{certFile: certFile, keyFile: keyFile}
	if err := p.Reload(); err != nil {
		return nil, err
	}
	return p, nil
}

// Reload reads the files again. If they do not hold a valid pair, it
// returns why and the pair in use stays: a half-copied file never takes the
// server's certificate away.
func (p *Pair) Reload() error {
	c, err := tls.LoadX509KeyPair(p.certFile, p.keyFile)
	if err != nil {
		return fmt.Errorf("tls: load %s and %s: %w", p.certFile, p.keyFile, err)
	}
	p.cur.Store(&c)
	return nil
}

// Leaf returns the certificate in use (LoadX509KeyPair parses it), for
// logs: its subject and expiry.
func (p *Pair) Leaf() *x509.Certificate { return p.cur.Load().Leaf }

// GetCertificate is a tls.Config.GetCertificate: it returns the pair
// loaded last.
func (p *Pair) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c := p.cur.Load()
	if c == nil {
		return nil, errors.New("tls: no certificate loaded")
	}
	return c, nil
}

// Config returns a server tls.Config that presents the pair. Everything
// else keeps Go's defaults, which are modern ones: TLS 1.2 and 1.3 only, and
// Go's own choice and order of cipher suites, which it keeps up to date.
func (p *Pair) Config() *tls.Config {
	return &tls.Config{GetCertificate: p.GetCertificate}
}
