package client

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dlmhq/dlm/wire"
)

// TestFromEnvReadsTheLocalCredentials: without DLM_KEY, FromEnv takes the
// tenant key from DLM_DATA_DIR's credentials.json, as the command line
// does, and fails clearly when there is none.
func TestFromEnvReadsTheLocalCredentials(t *testing.T) {
	s := startServer(t)
	dir := t.TempDir()
	b, _ := json.Marshal(wire.Credentials{Tenant: "default", TenantKey: s.TenantKey, TenantKeyID: s.TenantKeyID})
	if err := os.WriteFile(filepath.Join(dir, wire.CredentialsFile), b, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DLM_URL", s.URL)
	t.Setenv("DLM_KEY", "")
	t.Setenv("DLM_DATA_DIR", dir)
	c, err := FromEnv(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := ctxFor(t, time.Minute)
	l, err := c.TryAcquire(ctx, "from-env", &AcquireOptions{NoKeepAlive: true})
	if err != nil {
		t.Fatalf("TryAcquire with the key from credentials.json: %v", err)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}

	t.Setenv("DLM_DATA_DIR", t.TempDir())
	if _, err := FromEnv(nil); err == nil || !strings.Contains(err.Error(), "DLM_KEY") {
		t.Errorf("FromEnv with no key anywhere = %v, want an error naming DLM_KEY", err)
	}
}
