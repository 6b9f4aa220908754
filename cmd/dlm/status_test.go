package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/dlmhq/dlm/dlmtest/testserver"
	"github.com/dlmhq/dlm/wire"
)

func TestStatus(t *testing.T) {
	s := testserver.New(t, nil)
	env := tenantEnv(s)
	if r := runMain(t, env, "status", "cli/a"); r.code != 0 || !strings.Contains(r.stdout, "cli/a: free, last fencing token 0") {
		t.Errorf("status of an unused lock: exit %d:\n%s%s", r.code, r.stdout, r.stderr)
	}
	lease := mustAcquire(t, s, "--holder", "worker-7", "cli/a")
	r := runMain(t, env, "status", "cli/a")
	if r.code != 0 || !strings.Contains(r.stdout, "held") || !strings.Contains(r.stdout, "worker-7") {
		t.Errorf("status: exit %d:\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = runMain(t, env, "status", "--json", "cli/a")
	var got wire.Lock
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &got) != nil {
		t.Fatalf("status --json: exit %d: %s%s", r.code, r.stdout, r.stderr)
	}
	if got.FencingToken != lease.FencingToken || len(got.Holders) != 1 || got.Holders[0].LeaseID != "" || got.Waiters == nil {
		t.Errorf("status --json = %+v; want our holder without its lease id", got)
	}
}
