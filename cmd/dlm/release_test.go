package main

import (
	"strings"
	"testing"

	"github.com/dlmhq/dlm/dlmtest/testserver"
)

func TestRelease(t *testing.T) {
	s := testserver.New(t, nil)
	lease := mustAcquire(t, s, "cli/a")
	if r := runMain(t, tenantEnv(s), "release", lease.LeaseID); r.code != 0 || r.stdout != "released\n" {
		t.Errorf("release: exit %d: %q %q", r.code, r.stdout, r.stderr)
	}
	r := runMain(t, tenantEnv(s), "release", lease.LeaseID)
	if r.code != exitError || !strings.Contains(r.stderr, "lease_ended") || !strings.Contains(r.stderr, "released") {
		t.Errorf("second release: exit %d: %s", r.code, r.stderr)
	}
	mustAcquire(t, s, "--wait", "0", "cli/a") // free again
}
