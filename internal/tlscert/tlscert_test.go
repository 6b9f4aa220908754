package tlscert_test

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/dlmhq/dlm/dlmtest"
	"github.com/dlmhq/dlm/internal/tlscert"
)

// echoServer serves p on a real listener: each connection gets back every
// line it sends.
func echoServer(t *testing.T, p *tlscert.Pair) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", p.Config())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

// dial connects to addr trusting pool.
func dial(t *testing.T, addr string, pool *x509.CertPool) *tls.Conn {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func serialOf(c *tls.Conn) string {
	return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
}

// echo sends a line on c and checks it comes back.
func echo(t *testing.T, c *tls.Conn, br *bufio.Reader) {
	t.Helper()
	if _, err := io.WriteString(c, "ping\n"); err != nil {
		t.Fatalf("write: %v", err)
	}
	if line, err := br.ReadString('\n'); err != nil || line != "ping\n" {
		t.Fatalf("read = %q, %v", line, err)
	}
}

// TestReloadKeepsConnections swaps the files and reloads while a
// connection stays open: it goes on working, and a new connection is shown
// the new certificate.
func TestReloadKeepsConnections(t *testing.T) {
	ca := dlmtest.NewCA(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	first := ca.Issue(t, certFile, keyFile)
	p, err := tlscert.Load(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	addr := echoServer(t, p)

	old := dial(t, addr, ca.Pool)
	oldR := bufio.NewReader(old)
	echo(t, old, oldR)
	if got := serialOf(old); got != first.SerialNumber.String() {
		t.Fatalf("first connection shown serial %s, want %s", got, first.SerialNumber)
	}

	second := ca.Issue(t, certFile, keyFile)
	if err := p.Reload(); err != nil {
		t.Fatal(err)
	}
	echo(t, old, oldR) // the open connection is untouched
	c := dial(t, addr, ca.Pool)
	if got := serialOf(c); got != second.SerialNumber.String() {
		t.Errorf("new connection after Reload shown serial %s, want the new %s", got, second.SerialNumber)
	}
	if p.Leaf().SerialNumber.Cmp(second.SerialNumber) != 0 {
		t.Errorf("Leaf is serial %s, want %s", p.Leaf().SerialNumber, second.SerialNumber)
	}
}

// TestReloadBadFilesKeepsPair: a reload of broken files fails and the
// pair in use stays.
func TestReloadBadFilesKeepsPair(t *testing.T) {
	ca := dlmtest.NewCA(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	first := ca.Issue(t, certFile, keyFile)
	p, err := tlscert.Load(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	addr := echoServer(t, p)
	if err := os.WriteFile(certFile, []byte("-----BEGIN CERTIFICATE-----\nhalf a fi"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := p.Reload(); err == nil {
		t.Fatal("Reload of a truncated certificate succeeded")
	}
	if got := serialOf(dial(t, addr, ca.Pool)); got != first.SerialNumber.String() {
		t.Errorf("after a failed reload: serial %s, want the old %s", got, first.SerialNumber)
	}
	if _, err := tlscert.Load(filepath.Join(dir, "missing.pem"), keyFile); err == nil {
		t.Error("Load of a missing file succeeded")
	}
}

// TestOldProtocolsRefused: Go's defaults, which Config keeps, refuse TLS
// before 1.2.
func TestOldProtocolsRefused(t *testing.T) {
	ca := dlmtest.NewCA(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	ca.Issue(t, certFile, keyFile)
	p, err := tlscert.Load(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	addr := echoServer(t, p)
	c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: ca.Pool, MaxVersion: tls.VersionTLS11})
	if err == nil {
		c.Close()
		t.Fatal("a TLS 1.1 client completed a handshake")
	}
	if v := dial(t, addr, ca.Pool).ConnectionState().Version; v != tls.VersionTLS13 {
		t.Errorf("default client negotiated %s, want TLS 1.3", tls.VersionName(v))
	}
}
