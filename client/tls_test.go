package client

import (
	"crypto/tls"
	"iter"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dlmhq/dlm/dlmtest"
	"github.com/dlmhq/dlm/dlmtest/testserver"
	"github.com/dlmhq/dlm/internal/tlscert"
)

// startTLSServer serves the API over TLS with a certificate of ca and
// returns the server and its https:// URL.
func startTLSServer(t *testing.T, ca *dlmtest.CA) (*testserver.Server, string) {
	t.Helper()
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	ca.Issue(t, certFile, keyFile)
	pair, err := tlscert.Load(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := testserver.New(t, &testserver.Options{Listener: tls.NewListener(ln, pair.Config())})
	return s, "https://" + ln.Addr().String()
}

// TestFromEnvTrustsCACert: with DLM_CA_CERT, FromEnv's client trusts the
// server's CA besides the system's roots, for requests and watches alike;
// without it, the certificate is refused.
func TestFromEnvTrustsCACert(t *testing.T) {
	ca := dlmtest.NewCA(t)
	s, url := startTLSServer(t, ca)
	t.Setenv("DLM_URL", url)
	t.Setenv("DLM_KEY", s.TenantKey)
	t.Setenv("DLM_CA_CERT", ca.CertFile)
	c, err := FromEnv(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := ctxFor(t, time.Minute)
	next, stop := iter.Pull2(c.Watch(ctx, &WatchOptions{Name: "tls", FromStart: true}))
	defer stop()
	l, err := c.TryAcquire(ctx, "tls", &AcquireOptions{NoKeepAlive: true})
	if err != nil {
		t.Fatalf("TryAcquire over TLS: %v", err)
	}
	if ev, err, ok := next(); !ok || err != nil || ev.Token != l.Token() {
		t.Errorf("watch over TLS: %+v, %v, %v; want the acquire", ev, err, ok)
	}

	t.Setenv("DLM_CA_CERT", "")
	c2, err := FromEnv(&Options{RetryTimeout: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if _, err := c2.Inspect(ctx, "tls", ScopeTenant); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("Inspect without the CA = %v, want a certificate error", err)
	}
}

func TestCACertFileErrors(t *testing.T) {
	ca := dlmtest.NewCA(t)
	if _, err := New("https://x", "k", &Options{CACertFile: ca.CertFile, HTTPClient: http.DefaultClient}); err == nil {
		t.Error("New with CACertFile and HTTPClient: no error")
	}
	if _, err := New("https://x", "k", &Options{CACertFile: filepath.Join(t.TempDir(), "missing.pem")}); err == nil {
		t.Error("New with a missing CACertFile: no error")
	}
	notPEM := filepath.Join(t.TempDir(), "not.pem")
	os.WriteFile(notPEM, []byte("not a certificate"), 0o600)
	if _, err := New("https://x", "k", &Options{CACertFile: notPEM}); err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Errorf("New with a CACertFile of no PEM = %v", err)
	}
}
