package main

import (
	"context"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dlmhq/dlm/dlmtest"
	"github.com/dlmhq/dlm/dlmtest/testserver"
)

// TestRunStopsCommandOnForceRelease: the lease_ended push stops the
// command. The lease's renewal is 20 s away, so only the push can stop it
// within the wait below.
func TestRunStopsCommandOnForceRelease(t *testing.T) {
	s := testserver.New(t, nil)
	p := startDLM(t, s, "run", "jobs/forced", "--ttl", "60s", "--grace", "30s", "--", "sh", "-c", "echo started; exec sleep 600")
	p.stdout.waitLine(t, "started", 30*time.Second)
	admin := apiClient(t, s, s.AdminKey)
	start := time.Now()
	if _, err := admin.ForceRelease(context.Background(), "default", "jobs/forced", ""); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t, 10*time.Second); code != exitLockLost {
		t.Fatalf("exit %d, want %d: %s", code, exitLockLost, p.stderrString())
	}
	t.Logf("command stopped %v after the force-release", time.Since(start))
	if !strings.Contains(p.stderrString(), "force_released") {
		t.Errorf("stderr does not say why: %s", p.stderrString())
	}
}

// TestRunReleaseOnExitAfterSIGKILL: with --release-on-exit the lock of a
// killed run is released when its connection ends, not at its expiry.
func TestRunReleaseOnExitAfterSIGKILL(t *testing.T) {
	s := testserver.New(t, nil)
	p := startDLM(t, s, "run", "jobs/killed", "--ttl", "10m", "--release-on-exit", "--", "sh", "-c", "echo started $$; exec sleep 600 >/dev/null")
	line := p.stdout.waitLine(t, "started", 30*time.Second)
	if pid, err := strconv.Atoi(strings.TrimPrefix(line, "started ")); err == nil {
		t.Cleanup(func() { syscall.Kill(-pid, syscall.SIGKILL) }) // the orphaned command
	}
	c := apiClient(t, s, s.TenantKey)
	if info, err := c.Inspect(context.Background(), "jobs/killed", ""); err != nil || len(info.Holders) != 1 {
		t.Fatalf("before the kill: %+v %v", info, err)
	}
	p.cmd.Process.Kill()
	dlmtest.Eventually(t, "the killed run's lock is released", func() bool {
		info, err := c.Inspect(context.Background(), "jobs/killed", "")
		return err == nil && len(info.Holders) == 0
	})
}
