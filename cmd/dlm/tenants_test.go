package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/dlmhq/dlm/dlmtest/testserver"
)

func TestTenantsCommands(t *testing.T) {
	s := testserver.New(t, nil)
	env := map[string]string{"DLM_URL": s.URL, "DLM_KEY": s.AdminKey}
	r := runMain(t, env, "tenants", "create", "acme", "--json")
	var created struct {
		KeyID  string `json:"key_id"`
		APIKey string `json:"api_key"`
	}
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &created) != nil || created.APIKey == "" {
		t.Fatalf("create: exit %d: %s%s", r.code, r.stdout, r.stderr)
	}
	if r := runMain(t, env, "tenants", "list"); r.code != 0 || !strings.Contains(r.stdout, "acme") {
		t.Errorf("list: exit %d: %s%s", r.code, r.stdout, r.stderr)
	}
	acme := map[string]string{"DLM_URL": s.URL, "DLM_KEY": created.APIKey}
	if r := runMain(t, acme, "ls"); r.code != 0 {
		t.Errorf("new key refused: %s", r.stderr)
	}
	if r := runMain(t, env, "tenants", "keys", "revoke", "acme", created.KeyID); r.code != 0 {
		t.Errorf("revoke: exit %d: %s", r.code, r.stderr)
	}
	if r := runMain(t, acme, "ls"); r.code != exitError || !strings.Contains(r.stderr, "unauthenticated") {
		t.Errorf("revoked key: exit %d: %s", r.code, r.stderr)
	}
	if r := runMain(t, env, "tenants", "keys", "create", "acme"); r.code != 0 || !strings.Contains(r.stdout, "api_key:") {
		t.Errorf("keys create: exit %d: %s%s", r.code, r.stdout, r.stderr)
	}
}
