package main

import (
	"strings"
	"testing"

	"github.com/dlmhq/dlm/dlmtest/testserver"
)

func TestLs(t *testing.T) {
	s := testserver.New(t, nil)
	for _, name := range []string{"jobs/a", "jobs/b", "other"} {
		mustAcquire(t, s, name)
	}
	r := runMain(t, tenantEnv(s), "ls", "--prefix", "jobs/")
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if r.code != 0 || len(lines) != 3 || !strings.HasPrefix(lines[1], "jobs/a") || !strings.HasPrefix(lines[2], "jobs/b") {
		t.Errorf("ls --prefix: exit %d:\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = runMain(t, tenantEnv(s), "ls", "--json")
	if r.code != 0 || strings.Count(r.stdout, "\n") != 3 || !strings.Contains(r.stdout, `"name":"other"`) {
		t.Errorf("ls --json: exit %d:\n%s%s", r.code, r.stdout, r.stderr)
	}
}

// TestLsRefusedPrintsNoHeader: a listing the server refuses prints its error
// and nothing on stdout.
func TestLsRefusedPrintsNoHeader(t *testing.T) {
	s := testserver.New(t, nil)
	r := runMain(t, map[string]string{"DLM_URL": s.URL, "DLM_KEY": "dlm_wrong_key"}, "ls")
	if r.code != exitError || r.stdout != "" || !strings.Contains(r.stderr, "unauthenticated") {
		t.Errorf("ls with a wrong key: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
}
