package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dlmhq/dlm/dlmtest/testserver"
)

func TestRunPassesLeaseToCommand(t *testing.T) {
	s := testserver.New(t, nil)
	p := startDLM(t, s, "run", "jobs/env", "--", "sh", "-c", `echo "token=$DLM_FENCING_TOKEN name=$DLM_LOCK_NAME lease=$DLM_LEASE_ID"`)
	line := p.stdout.waitLine(t, "token=", 30*time.Second)
	if code := p.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("exit %d: %s", code, p.stderrString())
	}
	c := apiClient(t, s, s.TenantKey)
	info, err := c.Inspect(context.Background(), "jobs/env", "")
	if err != nil {
		t.Fatal(err)
	}
	var token int64
	var name, lease string
	if _, err := fmt.Sscanf(line, "token=%d name=%s lease=%s", &token, &name, &lease); err != nil {
		t.Fatalf("command printed %q: %v", line, err)
	}
	if token != info.Token || token == 0 || name != "jobs/env" || lease == "" {
		t.Errorf("command saw %q; the lock's last token is %d", line, info.Token)
	}
	if len(info.Holders) != 0 {
		t.Errorf("lock still held after run: %+v", info.Holders)
	}
	if _, err := c.Lease(context.Background(), lease); err == nil {
		t.Errorf("lease %s still live after run", lease)
	}
}

func TestConcurrentRunsNeverOverlap(t *testing.T) {
	s := testserver.New(t, nil)
	f := filepath.Join(t.TempDir(), "log")
	script := fmt.Sprintf(`echo start $DLM_FENCING_TOKEN $(date +%%s%%N) >> %[1]s; sleep 0.2; echo end $DLM_FENCING_TOKEN $(date +%%s%%N) >> %[1]s`, f)
	const procs = 4
	var all []*dlmProc
	for range procs {
		all = append(all, startDLM(t, s, "run", "shared/file", "--", "sh", "-c", script))
	}
	for _, p := range all {
		if code := p.wait(t, time.Minute); code != 0 {
			t.Fatalf("run exit %d: %s", code, p.stderrString())
		}
	}
	b, err := os.ReadFile(f)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 2*procs {
		t.Fatalf("log has %d lines, want %d:\n%s", len(lines), 2*procs, b)
	}
	var lastEnd, lastToken int64
	for i := 0; i < len(lines); i += 2 {
		var startTok, endTok, start, end int64
		if _, err := fmt.Sscanf(lines[i], "start %d %d", &startTok, &start); err != nil {
			t.Fatalf("line %d %q: %v\n%s", i, lines[i], err, b)
		}
		if _, err := fmt.Sscanf(lines[i+1], "end %d %d", &endTok, &end); err != nil || endTok != startTok {
			t.Fatalf("runs overlap: %q follows %q\n%s", lines[i+1], lines[i], b)
		}
		if start < lastEnd || startTok <= lastToken {
			t.Errorf("run with token %d started at %d before the previous one ended at %d\n%s", startTok, start, lastEnd, b)
		}
		lastEnd, lastToken = end, startTok
	}
}

func TestRunStopsCommandWhenLockForceReleased(t *testing.T) {
	s := testserver.New(t, nil)
	p := startDLM(t, s, "run", "--ttl", "1500ms", "jobs/force", "--", "sh", "-c",
		`trap 'echo got TERM; exit 143' TERM; echo ready; while :; do sleep 0.05; done`)
	p.stdout.waitLine(t, "ready", 30*time.Second)
	if _, err := apiClient(t, s, s.AdminKey).ForceRelease(context.Background(), "default", "jobs/force", ""); err != nil {
		t.Fatal(err)
	}
	p.stdout.waitLine(t, "got TERM", 10*time.Second)
	if code := p.wait(t, 30*time.Second); code != exitLockLost {
		t.Errorf("exit %d, want %d; stderr:\n%s", code, exitLockLost, p.stderrString())
	}
	if !strings.Contains(p.stderrString(), "force_released") {
		t.Errorf("stderr does not say why: %s", p.stderrString())
	}
	if strings.Contains(p.stderrString(), "dlm: dlm:") || strings.Contains(p.stderrString(), "run: dlm:") {
		t.Errorf("stderr repeats the dlm: prefix:\n%s", p.stderrString())
	}
}

func TestRunKillsCommandIgnoringTERMAfterGrace(t *testing.T) {
	s := testserver.New(t, nil)
	p := startDLM(t, s, "run", "--ttl", "1500ms", "--grace", "500ms", "jobs/stubborn", "--", "sh", "-c",
		`trap '' TERM; echo ready; while :; do sleep 0.05; done`)
	p.stdout.waitLine(t, "ready", 30*time.Second)
	if _, err := apiClient(t, s, s.AdminKey).ForceRelease(context.Background(), "default", "jobs/stubborn", ""); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t, 60*time.Second); code != exitLockLost {
		t.Errorf("exit %d, want %d; stderr:\n%s", code, exitLockLost, p.stderrString())
	}
	if !strings.Contains(p.stderrString(), "killing it") {
		t.Errorf("stderr: %s", p.stderrString())
	}
}

func TestRunExitCodes(t *testing.T) {
	s := testserver.New(t, nil)
	holder := apiClient(t, s, s.TenantKey)
	l, err := holder.TryAcquire(context.Background(), "jobs/busy", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release(context.Background())
	for _, tt := range []struct {
		name string
		args []string
		code int
	}{
		{"command status", []string{"run", "jobs/x", "--", "sh", "-c", "exit 3"}, 3},
		{"command killed by signal", []string{"run", "jobs/x", "--", "sh", "-c", "kill -KILL $$"}, 128 + 9},
		{"lock held, try once", []string{"run", "--wait", "0", "jobs/busy", "--", "true"}, exitNoLock},
		{"lock held, wait times out", []string{"run", "--wait", "300ms", "jobs/busy", "--", "true"}, exitNoLock},
		{"command not found", []string{"run", "jobs/x", "--", "no-such-command-dlm-test"}, exitNotFound},
		{"usage", []string{"run", "jobs/x", "true"}, exitUsage},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := startDLM(t, s, tt.args...)
			if code := p.wait(t, time.Minute); code != tt.code {
				t.Errorf("exit %d, want %d; stderr:\n%s", code, tt.code, p.stderrString())
			}
		})
	}
}

func TestRunForwardsFirstSignalAndAbortsOnSecond(t *testing.T) {
	s := testserver.New(t, nil)
	p := startDLM(t, s, "run", "jobs/sig", "--", "sh", "-c",
		`trap 'echo got INT; exit 7' INT; echo ready; while :; do sleep 0.05; done`)
	p.stdout.waitLine(t, "ready", 30*time.Second)
	p.cmd.Process.Signal(syscall.SIGINT)
	p.stdout.waitLine(t, "got INT", 10*time.Second)
	if code := p.wait(t, 30*time.Second); code != 7 {
		t.Errorf("exit %d, want the command's 7; stderr:\n%s", code, p.stderrString())
	}

	p = startDLM(t, s, "run", "jobs/sig", "--", "sh", "-c",
		`trap 'echo got INT' INT; echo ready; while :; do sleep 0.05; done`)
	p.stdout.waitLine(t, "ready", 30*time.Second)
	p.cmd.Process.Signal(syscall.SIGINT)
	p.stdout.waitLine(t, "got INT", 10*time.Second)
	p.cmd.Process.Signal(syscall.SIGINT)
	if code := p.wait(t, 30*time.Second); code != 128+int(syscall.SIGINT) {
		t.Errorf("exit %d after two SIGINTs, want %d; stderr:\n%s", code, 128+int(syscall.SIGINT), p.stderrString())
	}
	info, err := apiClient(t, s, s.TenantKey).Inspect(context.Background(), "jobs/sig", "")
	if err != nil || len(info.Holders) != 0 {
		t.Errorf("lock after abort: %+v %v; want released", info, err)
	}
}
