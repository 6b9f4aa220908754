package main

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/dlmhq/dlm/dlmtest/testserver"
	"github.com/dlmhq/dlm/engine"
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

// TestAcquireIdempotentRerun: a second process running the same dlm acquire
// --idempotency-key, without --holder, gets the same lease back, marked
// replayed, instead of idempotency_key_reused.
func TestAcquireIdempotentRerun(t *testing.T) {
	s := testserver.New(t, nil)
	var leases []wire.Lease
	for range 2 {
		p := startDLM(t, s, "acquire", "--json", "--idempotency-key", "deploy-42", "cli/idem")
		line := p.stdout.waitLine(t, "lease_id", 30*time.Second)
		if code := p.wait(t, 30*time.Second); code != 0 {
			t.Fatalf("exit %d; stderr:\n%s", code, p.stderrString())
		}
		var l wire.Lease
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		leases = append(leases, l)
	}
	if leases[0].LeaseID != leases[1].LeaseID || leases[0].Replayed || !leases[1].Replayed {
		t.Errorf("leases = %+v, then %+v; want the same lease, the second marked replayed", leases[0], leases[1])
	}
	if h, _ := os.Hostname(); leases[0].HolderID != h {
		t.Errorf("holder = %q, want the host name %q", leases[0].HolderID, h)
	}
}

// TestJSONErrors: with --json an error is the API's error object on stderr,
// with its code and details, and stdout stays empty; the exit code is as
// without --json.
func TestJSONErrors(t *testing.T) {
	s := testserver.New(t, nil)
	mustAcquire(t, s, "--holder", "owner", "cli/taken")
	r := runMain(t, tenantEnv(s), "acquire", "--json", "--wait", "0", "cli/taken")
	var e struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
			Details struct {
				Holders []wire.Lease `json:"holders"`
			} `json:"details"`
		} `json:"error"`
	}
	if err := json.Unmarshal([]byte(r.stderr), &e); err != nil || r.code != exitNoLock || r.stdout != "" ||
		e.Error.Code != "lock_conflict" || len(e.Error.Details.Holders) != 1 || e.Error.Details.Holders[0].HolderID != "owner" {
		t.Errorf("acquire --json of a held lock: exit %d, stdout %q, stderr %q (%v)", r.code, r.stdout, r.stderr, err)
	}
	r = runMain(t, tenantEnv(s), "--json", "status", "bad name")
	if err := json.Unmarshal([]byte(r.stderr), &e); err != nil || r.code != exitUsage || e.Error.Code != "invalid_argument" {
		t.Errorf("status --json of a bad name: exit %d, stderr %q (%v)", r.code, r.stderr, err)
	}
}

// TestAcquireWaitsLongerThanTheServersMaxWait: a wait longer than the
// server's --max-wait is not refused; it runs to its end (wait_timeout).
func TestAcquireWaitsLongerThanTheServersMaxWait(t *testing.T) {
	s := testserver.New(t, &testserver.Options{Engine: engine.Options{MaxWait: time.Second}})
	mustAcquire(t, s, "cli/slow")
	r := runMain(t, tenantEnv(s), "acquire", "--wait", "2500ms", "cli/slow")
	if r.code != exitNoLock || !strings.Contains(r.stderr, "wait_timeout") {
		t.Errorf("acquire --wait 2500ms against --max-wait 1s: exit %d, stderr %q; want %d wait_timeout", r.code, r.stderr, exitNoLock)
	}
}
