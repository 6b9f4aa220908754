package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/dlmhq/dlm/dlmtest"
	"github.com/dlmhq/dlm/dlmtest/testserver"
	"github.com/dlmhq/dlm/wire"
)

func TestAcquireSeveralNames(t *testing.T) {
	s := testserver.New(t, nil)
	env := tenantEnv(s)
	mustAcquire(t, s, "cli/m2")
	r := runMain(t, env, "acquire", "--wait", "0", "cli/m1", "cli/m2")
	if r.code != exitNoLock || !strings.Contains(r.stderr, "lock_conflict") {
		t.Fatalf("with cli/m2 held: exit %d, stderr %q; want %d", r.code, r.stderr, exitNoLock)
	}
	if r := runMain(t, env, "status", "cli/m1"); !strings.Contains(r.stdout, "free") {
		t.Fatalf("cli/m1 after the refusal: %s%s", r.stdout, r.stderr)
	}
	r = runMain(t, env, "acquire", "--json", "--shared", "cli/m3", "cli/m1")
	var got wire.Leases
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &got) != nil {
		t.Fatalf("acquire of two free locks: exit %d: %s%s", r.code, r.stdout, r.stderr)
	}
	if len(got.Leases) != 2 || got.Leases[0].Name != "cli/m3" || got.Leases[1].Name != "cli/m1" || got.Leases[1].Mode != "shared" || got.Leases[0].LeaseID == "" {
		t.Fatalf("leases = %+v; want cli/m3 then cli/m1, shared, with their IDs", got.Leases)
	}
	r = runMain(t, env, "acquire", "cli/m4", "cli/m5")
	if r.code != 0 || strings.Count(r.stdout, "acquired cli/m") != 2 || strings.Count(r.stdout, "lease_id:") != 2 {
		t.Fatalf("human output: exit %d:\n%s%s", r.code, r.stdout, r.stderr)
	}
}

func TestRunHoldsASemaphorePermit(t *testing.T) {
	s := testserver.New(t, nil)
	env := tenantEnv(s)
	first := mustAcquire(t, s, "--limit", "2", "cli/pool")
	if first.Mode != "shared" || first.Limit != 2 {
		t.Fatalf("permit = %+v, want shared with limit 2", first)
	}
	if r := runMain(t, env, "run", "--limit", "2", "--wait", "0", "cli/pool", "--", "true"); r.code != 0 {
		t.Fatalf("run with a permit free: exit %d: %s", r.code, r.stderr)
	}
	mustAcquire(t, s, "--limit", "2", "cli/pool")
	r := runMain(t, env, "run", "--limit", "2", "--wait", "0", "cli/pool", "--", "true")
	if r.code != exitNoLock || !strings.Contains(r.stderr, "lock_conflict") {
		t.Fatalf("run with both permits taken: exit %d, stderr %q; want %d", r.code, r.stderr, exitNoLock)
	}
	if r := runMain(t, env, "run", "--limit", "3", "--wait", "0", "cli/pool", "--", "true"); r.code == 0 || !strings.Contains(r.stderr, "limit") {
		t.Fatalf("run with another limit: exit %d, stderr %q; want refused on limit", r.code, r.stderr)
	}
	r = runMain(t, env, "status", "cli/pool")
	if r.code != 0 || !strings.Contains(r.stdout, "semaphore of 2 (2 taken)") {
		t.Fatalf("status: exit %d:\n%s%s", r.code, r.stdout, r.stderr)
	}
}

func TestStatusShowsLockDelayAndMultiLockWaiter(t *testing.T) {
	s := testserver.New(t, nil)
	env := tenantEnv(s)
	lease := mustAcquire(t, s, "--ttl", "200ms", "--lock-delay", "1m", "--max-hold", "10s", "cli/delayed")
	if lease.LockDelayMs != 60000 || lease.MaxHoldMs != 10000 {
		t.Fatalf("lease = %+v, want lock_delay_ms 60000 and max_hold_ms 10000", lease)
	}
	dlmtest.Eventually(t, "status shows the lock-delay after the expiry", func() bool {
		return strings.Contains(runMain(t, env, "status", "cli/delayed").stdout, "lock-delay until")
	})
	if r := runMain(t, env, "status", "--json", "cli/delayed"); !strings.Contains(r.stdout, `"lock_delay_until"`) {
		t.Fatalf("status --json: %s", r.stdout)
	}

	mustAcquire(t, s, "cli/w2")
	done := make(chan result, 1)
	go func() { done <- runMain(t, env, "acquire", "--wait", "30s", "cli/w1", "cli/w2") }()
	dlmtest.Eventually(t, "status shows the waiter of two locks", func() bool {
		return strings.Contains(runMain(t, env, "status", "cli/w2").stdout, "(with 2 locks)")
	})
	if r := runMain(t, map[string]string{"DLM_URL": s.URL, "DLM_KEY": s.AdminKey}, "force-release", "cli/w2"); r.code != 0 {
		t.Fatalf("force-release: exit %d: %s", r.code, r.stderr)
	}
	if r := <-done; r.code != 0 || strings.Count(r.stdout, "acquired") != 2 {
		t.Fatalf("the waiting acquire: exit %d:\n%s%s", r.code, r.stdout, r.stderr)
	}
}
