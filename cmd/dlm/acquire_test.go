package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/dlmhq/dlm/dlmtest/testserver"
	"github.com/dlmhq/dlm/wire"
)

// tenantEnv is the environment of a CLI run against s with the tenant key.
func tenantEnv(s *testserver.Server) map[string]string {
	return map[string]string{"DLM_URL": s.URL, "DLM_KEY": s.TenantKey}
}

// mustAcquire runs dlm acquire --json with args and returns the lease.
func mustAcquire(t testing.TB, s *testserver.Server, args ...string) wire.Lease {
	t.Helper()
	r := runMain(t, tenantEnv(s), append([]string{"acquire", "--json"}, args...)...)
	var lease wire.Lease
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &lease) != nil || lease.LeaseID == "" || lease.FencingToken == 0 {
		t.Fatalf("dlm acquire %q: exit %d, stdout %q, stderr %q", args, r.code, r.stdout, r.stderr)
	}
	return lease
}

func TestAcquire(t *testing.T) {
	s := testserver.New(t, nil)
	env := tenantEnv(s)
	lease := mustAcquire(t, s, "--ttl", "10s", "--holder", "me", "cli/a")
	if lease.Name != "cli/a" || lease.HolderID != "me" || lease.TTLMs != 10000 || lease.Mode != "exclusive" {
		t.Errorf("lease = %+v", lease)
	}
	r := runMain(t, env, "acquire", "--wait", "0", "cli/a")
	if r.code != exitNoLock || !strings.Contains(r.stderr, "lock_conflict") {
		t.Errorf("acquire of a held lock: exit %d, stderr %q; want %d", r.code, r.stderr, exitNoLock)
	}
	r = runMain(t, env, "acquire", "--wait", "200ms", "cli/a")
	if r.code != exitNoLock || !strings.Contains(r.stderr, "wait_timeout") {
		t.Errorf("acquire with a wait: exit %d, stderr %q; want %d", r.code, r.stderr, exitNoLock)
	}
	r = runMain(t, env, "acquire", "--dry-run", "cli/a")
	if r.code != 0 || !strings.Contains(r.stdout, "would not be granted") {
		t.Errorf("dry run: exit %d, %q %q", r.code, r.stdout, r.stderr)
	}
	r = runMain(t, env, "acquire", "--shared", "cli/b")
	if r.code != 0 || !strings.Contains(r.stdout, "acquired cli/b (shared)") || !strings.Contains(r.stdout, "fencing_token: 1") {
		t.Errorf("human output: exit %d:\n%s%s", r.code, r.stdout, r.stderr)
	}
	again := mustAcquire(t, s, "--idempotency-key", "k1", "cli/c")
	if replay := mustAcquire(t, s, "--idempotency-key", "k1", "cli/c"); replay.LeaseID != again.LeaseID {
		t.Errorf("same idempotency key gave lease %s, then %s", again.LeaseID, replay.LeaseID)
	}
}
