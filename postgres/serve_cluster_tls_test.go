package postgres_test

import (
	"context"
	"errors"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/client"
	"github.com/dlmhq/dlm/dlmtest"
)

// TestClusterOverTLS runs two `dlm serve --postgres` instances with TLS on
// one schema: a lock taken over HTTPS on one is held on the other.
func TestClusterOverTLS(t *testing.T) {
	base, schema := freshSchema(t)
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	ca := dlmtest.NewCA(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	ca.Issue(t, certFile, keyFile)
	var clients []*client.Client
	var key string
	for range 2 {
		s := dlmtest.MustServe(t, dlmtest.ServeOptions{
			Args: []string{"--postgres", u.String(), "--tls-cert", certFile, "--tls-key", keyFile},
			Env:  []string{"DLM_POSTGRES_URL="},
		})
		if key == "" {
			key = dlmtest.Credentials(t, s.Dir).TenantKey
		}
		c, err := client.New(s.URL, key, &client.Options{CACertFile: ca.CertFile})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		clients = append(clients, c)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	l, err := clients[0].TryAcquire(ctx, "tls-cluster", &client.AcquireOptions{HolderID: "a", NoKeepAlive: true})
	if err != nil {
		t.Fatalf("acquire over TLS on the first instance: %v", err)
	}
	if _, err := clients[1].TryAcquire(ctx, "tls-cluster", &client.AcquireOptions{HolderID: "b", NoKeepAlive: true}); !errors.Is(err, dlm.ErrLockConflict) {
		t.Fatalf("acquire over TLS on the second instance = %v, want a conflict", err)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	l2, err := clients[1].TryAcquire(ctx, "tls-cluster", &client.AcquireOptions{HolderID: "b", NoKeepAlive: true})
	if err != nil || l2.Token() <= l.Token() {
		t.Fatalf("acquire after the release = %v, %v; want a greater token than %d", l2, err, l.Token())
	}
}
