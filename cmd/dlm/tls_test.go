package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"iter"
	"net/http"
	"net/http/httptrace"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/client"
	"github.com/dlmhq/dlm/dlmtest"
)

// tlsServer runs dlm serve with a certificate of a fresh CA, given through
// the environment, and returns it, the CA and the certificate's files.
func tlsServer(t *testing.T) (p *dlmtest.Server, ca *dlmtest.CA, certFile, keyFile string, first *x509.Certificate) {
	t.Helper()
	ca = dlmtest.NewCA(t)
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	first = ca.Issue(t, certFile, keyFile)
	p = dlmtest.MustServe(t, dlmtest.ServeOptions{Env: []string{"DLM_TLS_CERT=" + certFile, "DLM_TLS_KEY=" + keyFile}})
	if !strings.HasPrefix(p.URL, "https://") {
		t.Fatalf("dlm serve with TLS listens on %s, want https://", p.URL)
	}
	return p, ca, certFile, keyFile, first
}

// TestServeTLS: over TLS, acquire and watch work through the client and
// the command line, which trust the server's CA through DLM_CA_CERT, and
// plain HTTP to the port gets no answer of the API.
func TestServeTLS(t *testing.T) {
	p, ca, _, _, _ := tlsServer(t)
	creds := dlmtest.Credentials(t, p.Dir)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	c, err := client.New(p.URL, creds.TenantKey, &client.Options{CACertFile: ca.CertFile})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	next, stop := iter.Pull2(c.Watch(ctx, &client.WatchOptions{Name: "tls", FromStart: true}))
	defer stop()
	l, err := c.TryAcquire(ctx, "tls", &client.AcquireOptions{HolderID: "over-tls"})
	if err != nil {
		t.Fatalf("acquire over TLS: %v", err)
	}
	if ev, err := nextOf(next, "over-tls"); err != nil || ev.Token != l.Token() {
		t.Fatalf("watch over TLS: %+v, %v; want the acquire", ev, err)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	// A session over WSS: the force-release of a lock taken on it is
	// pushed, and the lock is lost at once, long before its renewal.
	admin, err := client.New(p.URL, creds.AdminKey, &client.Options{CACertFile: ca.CertFile})
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	held, err := c.TryAcquire(ctx, "tls-session", &client.AcquireOptions{HolderID: "over-wss", TTL: 10 * time.Minute})
	if err != nil {
		t.Fatalf("acquire over TLS: %v", err)
	}
	if _, err := admin.ForceRelease(ctx, "default", "tls-session", ""); err != nil {
		t.Fatal(err)
	}
	select {
	case <-held.Lost():
	case <-ctx.Done():
		t.Fatal("a force-release was not pushed over the TLS session")
	}

	// The command line, with DLM_CA_CERT; without it the certificate is
	// not trusted.
	env := map[string]string{"DLM_URL": p.URL, "DLM_KEY": creds.TenantKey, "DLM_CA_CERT": ca.CertFile}
	if r := runMain(t, env, "acquire", "cli-tls", "--wait", "0", "--json"); r.code != 0 || !strings.Contains(r.stdout, `"lease_id"`) {
		t.Errorf("dlm acquire over TLS: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	for _, protocol := range []string{"http", "session"} {
		if r := runMain(t, env, "bench", "uncontended", "--protocol", protocol, "--duration", "500ms", "--clients", "2", "--json"); r.code != 0 || !strings.Contains(r.stdout, `"workload":"uncontended"`) {
			t.Errorf("dlm bench --protocol %s over TLS: exit %d\n%s%s", protocol, r.code, r.stdout, r.stderr)
		}
	}
	delete(env, "DLM_CA_CERT")
	if r := runMain(t, env, "status", "cli-tls"); r.code == 0 || !strings.Contains(r.stderr, "certificate") {
		t.Errorf("dlm status without DLM_CA_CERT: exit %d, stderr %q; want a certificate error", r.code, r.stderr)
	}

	// Plain HTTP to the TLS port: net/http's refusal, not the API.
	plain := "http://" + strings.TrimPrefix(p.URL, "https://")
	for _, path := range []string{"/healthz", "/v1/locks"} {
		req, _ := http.NewRequest("GET", plain+path, nil)
		req.Header.Set("Authorization", "Bearer "+creds.TenantKey)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			continue // refused outright: no answer either
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 400 || json.Valid(b) {
			t.Errorf("plain HTTP GET %s on the TLS port = %d %q; want 400 and no JSON", path, resp.StatusCode, b)
		}
	}
}

// TestServeTLSReloadOnHangup swaps the certificate files and sends SIGHUP
// while a keep-alive connection and a watch stay open: both keep working,
// and a new connection is shown the new certificate.
func TestServeTLSReloadOnHangup(t *testing.T) {
	p, ca, certFile, keyFile, first := tlsServer(t)
	creds := dlmtest.Credentials(t, p.Dir)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// A client whose one connection stays open across the reload.
	kept := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool}, MaxConnsPerHost: 1}}
	if serial, _ := tlsGet(t, kept, p.URL); serial != first.SerialNumber.String() {
		t.Fatalf("shown serial %s, want %s", serial, first.SerialNumber)
	}
	c, err := client.New(p.URL, creds.TenantKey, &client.Options{CACertFile: ca.CertFile})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	next, stop := iter.Pull2(c.Watch(ctx, &client.WatchOptions{Name: "reload", FromStart: true}))
	defer stop()
	acquireRelease(t, ctx, c, "before")
	if _, err := nextOf(next, "before"); err != nil {
		t.Fatalf("watch before the reload: %v", err)
	}

	second := ca.Issue(t, certFile, keyFile)
	if err := p.Notify(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	// A new connection sees the new certificate once the server has
	// reloaded; the reload is not observable otherwise.
	dlmtest.Eventually(t, "a new connection shows the new certificate after SIGHUP", func() bool {
		fresh := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool}}}
		defer fresh.CloseIdleConnections()
		serial, _ := tlsGet(t, fresh, p.URL)
		return serial == second.SerialNumber.String()
	})

	if serial, reused := tlsGet(t, kept, p.URL); !reused || serial != first.SerialNumber.String() {
		t.Errorf("kept connection after the reload: reused %v, serial %s; want its old connection, serial %s", reused, serial, first.SerialNumber)
	}
	acquireRelease(t, ctx, c, "after")
	if _, err := nextOf(next, "after"); err != nil {
		t.Errorf("watch opened before the reload, after it: %v", err)
	}
	if !strings.Contains(p.Stderr.String(), "reloaded the TLS certificate") {
		t.Errorf("no log line of the reload:\n%s", p.Stderr.String())
	}
}

// tlsGet sends GET /healthz with hc and returns the serial number of the
// certificate the server showed on the connection used, and whether that
// connection was open before.
func tlsGet(t *testing.T, hc *http.Client, base string) (serial string, reused bool) {
	t.Helper()
	req, _ := http.NewRequest("GET", base+"/healthz", nil)
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
		GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused },
	}))
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("GET /healthz over TLS: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.TLS == nil {
		t.Fatalf("GET /healthz over TLS = %d, TLS %v", resp.StatusCode, resp.TLS != nil)
	}
	return resp.TLS.PeerCertificates[0].SerialNumber.String(), reused
}

// nextOf returns the next event of holder from a watch, skipping others
// (the release of an earlier holder).
func nextOf(next func() (dlm.Event, error, bool), holder string) (dlm.Event, error) {
	for {
		ev, err, ok := next()
		if !ok {
			return ev, errors.New("the watch ended")
		}
		if err != nil || ev.HolderID == holder {
			return ev, err
		}
	}
}

func acquireRelease(t *testing.T, ctx context.Context, c *client.Client, holder string) {
	t.Helper()
	l, err := c.TryAcquire(ctx, "reload", &client.AcquireOptions{HolderID: holder})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
}
