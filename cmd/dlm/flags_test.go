package main

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func TestKeyFromCredentialsFile(t *testing.T) {
	var mu sync.Mutex
	var auth []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		auth = append(auth, r.URL.Path+" "+r.Header.Get("Authorization"))
		mu.Unlock()
		if r.URL.Path == "/v1/tenants" {
			w.Write([]byte(`{"tenants":[]}`))
			return
		}
		w.Write([]byte(`{"name":"a","scope":"tenant","fencing_token":0,"holders":[],"waiters":[]}`))
	}))
	defer srv.Close()
	dir := t.TempDir()
	creds := `{"admin_key":"ADMIN","tenant":"default","tenant_key":"TENANT","tenant_key_id":"k1"}`
	if err := os.WriteFile(filepath.Join(dir, "credentials.json"), []byte(creds), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"DLM_URL": srv.URL, "DLM_DATA_DIR": dir}
	for _, args := range [][]string{{"status", "a"}, {"tenants", "list"}, {"--key", "FLAG", "status", "a"}, {"status", "a", "--key", "FLAG"}} {
		if r := runMain(t, env, args...); r.code != 0 {
			t.Fatalf("dlm %q: exit %d: %s", args, r.code, r.stderr)
		}
	}
	env["DLM_KEY"] = "ENV"
	if r := runMain(t, env, "status", "a"); r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	want := []string{
		"/v1/locks/a Bearer TENANT", "/v1/tenants Bearer ADMIN",
		"/v1/locks/a Bearer FLAG", "/v1/locks/a Bearer FLAG", "/v1/locks/a Bearer ENV",
	}
	if strings.Join(auth, "\n") != strings.Join(want, "\n") {
		t.Errorf("requests:\n%s\nwant:\n%s", strings.Join(auth, "\n"), strings.Join(want, "\n"))
	}
}

func TestNoKeyExplainsWhereKeysComeFrom(t *testing.T) {
	r := runMain(t, map[string]string{"DLM_DATA_DIR": t.TempDir()}, "status", "a")
	if r.code != exitError || !strings.Contains(r.stderr, "DLM_KEY") || !strings.Contains(r.stderr, "credentials.json") {
		t.Errorf("exit %d, stderr %q", r.code, r.stderr)
	}
}
