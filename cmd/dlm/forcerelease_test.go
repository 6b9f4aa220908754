package main

import (
	"strings"
	"testing"

	"github.com/dlmhq/dlm/dlmtest/testserver"
)

func TestForceRelease(t *testing.T) {
	s := testserver.New(t, nil)
	mustAcquire(t, s, "--holder", "stuck", "cli/a")
	admin := map[string]string{"DLM_URL": s.URL, "DLM_KEY": s.AdminKey}
	r := runMain(t, admin, "force-release", "cli/a")
	if r.code != 0 || !strings.Contains(r.stdout, "1 leases ended") || !strings.Contains(r.stdout, "stuck") {
		t.Errorf("force-release: exit %d:\n%s%s", r.code, r.stdout, r.stderr)
	}
	mustAcquire(t, s, "--wait", "0", "cli/a")
	if r := runMain(t, tenantEnv(s), "force-release", "cli/a"); r.code != exitError || !strings.Contains(r.stderr, "permission_denied") {
		t.Errorf("force-release with a tenant key: exit %d: %s", r.code, r.stderr)
	}
}
