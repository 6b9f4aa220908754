package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dlmhq/dlm/client"
	"github.com/dlmhq/dlm/dlmtest/testserver"
	"github.com/dlmhq/dlm/engine"
)

// runBenchJSON runs dlm bench --json with args against s and returns its report.
func runBenchJSON(t *testing.T, s *testserver.Server, args ...string) (*benchReport, result) {
	t.Helper()
	r := runMain(t, tenantEnv(s), append([]string{"bench", "--json"}, args...)...)
	var rep benchReport
	if r.code != 0 {
		t.Fatalf("dlm bench %q: exit %d, stderr:\n%s", args, r.code, r.stderr)
	}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("dlm bench %q: --json output does not parse: %v\n%s", args, err, r.stdout)
	}
	return &rep, r
}

// checkReport checks what every report must say: work done, every request
// accounted for, no errors, latencies in order.
func checkReport(t *testing.T, rep *benchReport, workload string, ops ...string) {
	t.Helper()
	if rep.Workload != workload || rep.Count <= 0 || rep.PerSecond <= 0 || rep.Seconds <= 0 {
		t.Errorf("report: workload %q, count %d, %.1f/s in %.2fs; want work done", rep.Workload, rep.Count, rep.PerSecond, rep.Seconds)
	}
	if rep.ErrorCount != 0 || len(rep.Errors) != 0 {
		t.Errorf("errors: %d %v", rep.ErrorCount, rep.Errors)
	}
	if !strings.HasPrefix(rep.Prefix, "bench/"+rep.RunID+"/") || len(rep.RunID) != 8 {
		t.Errorf("run id %q, prefix %q", rep.RunID, rep.Prefix)
	}
	var n int64
	for _, name := range ops {
		o := rep.Ops[name]
		if o == nil || o.Count == 0 {
			t.Errorf("no %s in the report: %+v", name, rep.Ops)
			continue
		}
		n += o.Count
		if !(0 < o.P50Ms && o.P50Ms <= o.P99Ms && o.P99Ms <= o.P999Ms && o.P999Ms <= o.MaxMs) {
			t.Errorf("%s latency: p50 %v p99 %v p99.9 %v max %v: want 0 < p50 ≤ p99 ≤ p99.9 ≤ max", name, o.P50Ms, o.P99Ms, o.P999Ms, o.MaxMs)
		}
	}
	if len(rep.Ops) != len(ops) || n != rep.Requests {
		t.Errorf("ops %v with %d requests in all; want exactly %q adding up to %d", rep.Ops, n, ops, rep.Requests)
	}
}

// heldLocks lists the locks under prefix that have holders.
func heldLocks(t *testing.T, s *testserver.Server, prefix string) []client.LockInfo {
	t.Helper()
	var held []client.LockInfo
	for l, err := range apiClient(t, s, s.TenantKey).ListAll(t.Context(), &client.ListOptions{Prefix: prefix}) {
		if err != nil {
			t.Fatal(err)
		}
		if len(l.Holders) > 0 {
			held = append(held, l)
		}
	}
	return held
}

func TestBenchUncontended(t *testing.T) {
	s := testserver.New(t, nil)
	rep, _ := runBenchJSON(t, s, "uncontended", "--duration", "1s", "--clients", "4")
	checkReport(t, rep, "uncontended", "acquire", "release")
	if rep.Unit != "cycles" || rep.Clients != 4 || rep.Ops["acquire"].Count != rep.Count || rep.Ops["release"].Count != rep.Count {
		t.Errorf("unit %q, %d clients, %d cycles, ops %+v", rep.Unit, rep.Clients, rep.Count, rep.Ops)
	}
	if held := heldLocks(t, s, rep.Prefix); len(held) != 0 {
		t.Errorf("%d locks still held after the run", len(held))
	}
}

func TestBenchContended(t *testing.T) {
	s := testserver.New(t, nil)
	rep, r := runBenchJSON(t, s, "contended", "--duration", "2s", "--clients", "4", "--progress")
	checkReport(t, rep, "contended", "acquire", "release")
	c := rep.Contended
	if rep.Unit != "handoffs" || c == nil || c.GrantsMin == 0 || c.GrantsMax < c.GrantsMin || c.Waits != rep.Count || c.LongestWaitMs <= 0 || c.FIFOBound != 3 {
		t.Errorf("unit %q, %d handoffs, contended report %+v", rep.Unit, rep.Count, c)
	}
	if !strings.HasPrefix(r.stderr, "contended ") || !strings.Contains(r.stderr, "handoffs/s") {
		t.Errorf("no progress line on stderr: %q", r.stderr)
	}
	if held := heldLocks(t, s, rep.Prefix); len(held) != 0 {
		t.Errorf("the lock is still held after the run: %+v", held)
	}
}

func TestBenchHold(t *testing.T) {
	s := testserver.New(t, nil)
	// The test server runs in this process, so its memory is ours.
	rep, _ := runBenchJSON(t, s, "hold", "--leases", "200", "--clients", "8", "--server-pid", fmt.Sprint(os.Getpid()))
	checkReport(t, rep, "hold", "acquire")
	h := rep.Hold
	if rep.Count != 200 || h == nil || h.Held != 200 || h.Leases != 200 || h.TTLMs != time.Hour.Milliseconds() || h.First10PerSec <= 0 || h.Last10PerSecond <= 0 || h.Release != nil {
		t.Errorf("count %d, hold report %+v", rep.Count, h)
	}
	if sr := rep.Server; sr == nil || !strings.HasSuffix(sr.Source, "/status VmRSS") || sr.RSSBeforeBytes <= 0 || sr.RSSAfterBytes <= 0 {
		t.Errorf("server memory: %+v", sr)
	}
	held := heldLocks(t, s, rep.Prefix)
	if len(held) != 200 {
		t.Fatalf("%d locks held under %s, want 200", len(held), rep.Prefix)
	}
	for _, l := range held {
		if len(l.Holders) != 1 || !strings.HasPrefix(l.Holders[0].HolderID, "bench-"+rep.RunID+"-") || time.Until(l.Holders[0].ExpiresAt) < 50*time.Minute {
			t.Errorf("%s: holders %+v", l.Name, l.Holders)
		}
	}
}

func TestBenchHoldRelease(t *testing.T) {
	s := testserver.New(t, nil)
	rep, _ := runBenchJSON(t, s, "hold", "--leases", "50", "--clients", "4", "--release")
	if rep.Hold == nil || rep.Hold.Held != 50 || rep.Hold.Release == nil || rep.Hold.Release.Released != 50 || rep.ErrorCount != 0 {
		t.Errorf("hold --release: %+v, errors %v", rep.Hold, rep.Errors)
	}
	if held := heldLocks(t, s, rep.Prefix); len(held) != 0 {
		t.Errorf("%d locks still held after --release", len(held))
	}
}

func TestBenchHoldLimit(t *testing.T) {
	s := testserver.New(t, &testserver.Options{Engine: engine.Options{MaxLeasesPerTenant: 30}})
	rep, _ := runBenchJSON(t, s, "hold", "--leases", "100", "--clients", "2")
	if rep.Hold.Held != 30 || rep.Errors["limit_exceeded"] == 0 || !strings.Contains(rep.Aborted, "max-leases-per-tenant") {
		t.Errorf("hold past the server's limit: held %d, errors %v, aborted %q", rep.Hold.Held, rep.Errors, rep.Aborted)
	}
}

func TestBenchMixed(t *testing.T) {
	s := testserver.New(t, nil)
	rep, _ := runBenchJSON(t, s, "mixed", "--duration", "1s", "--clients", "6", "--names", "2", "--renews", "2")
	checkReport(t, rep, "mixed", "acquire_shared", "acquire_exclusive", "renew", "release")
	if m := rep.Mixed; m == nil || m.Names != 2 || m.Renews != 2 || rep.Ops["renew"].Count != 2*rep.Count {
		t.Errorf("mixed report %+v, %d cycles, ops %+v", m, rep.Count, rep.Ops)
	}
	if held := heldLocks(t, s, rep.Prefix); len(held) != 0 {
		t.Errorf("%d locks still held after the run", len(held))
	}
}

func TestBenchText(t *testing.T) {
	s := testserver.New(t, nil)
	r := runMain(t, tenantEnv(s), "bench", "uncontended", "--duration", "300ms", "--clients", "2")
	for _, want := range []string{"dlm bench uncontended: 2 clients", "cycles/s", "acquire", "release", "p99.9", "errors: none", "server memory: unknown"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("report without %q: exit %d\n%s%s", want, r.code, r.stdout, r.stderr)
		}
	}
}

func TestBenchUsage(t *testing.T) {
	s := testserver.New(t, nil)
	for _, tt := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"bench"}, exitUsage, "Usage: dlm bench WORKLOAD"},
		{[]string{"bench", "sideways"}, exitUsage, `unknown workload "sideways"`},
		{[]string{"bench", "mixed", "--shared-ratio", "2"}, exitUsage, "between 0 and 1"},
		{[]string{"bench", "--help"}, 0, "uncontended"},
	} {
		if r := runMain(t, tenantEnv(s), tt.args...); r.code != tt.code || !strings.Contains(r.stderr, tt.want) {
			t.Errorf("dlm %q: exit %d, stderr %q; want %d and %q", tt.args, r.code, r.stderr, tt.code, tt.want)
		}
	}
	r := runMain(t, map[string]string{"DLM_URL": s.URL, "DLM_KEY": "dlm_wrong"}, "bench", "uncontended")
	if r.code != exitError || !strings.Contains(r.stderr, "401 unauthenticated") {
		t.Errorf("wrong key: exit %d, stderr %q", r.code, r.stderr)
	}
}

// TestBenchInterrupt checks that SIGINT ends a run early with its report.
func TestBenchInterrupt(t *testing.T) {
	s := testserver.New(t, nil)
	p := startDLM(t, s, "bench", "uncontended", "--duration", "1m", "--clients", "2", "--json", "--progress")
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(p.stderrString(), "cycles/s") {
		if time.Now().After(deadline) {
			t.Fatalf("no progress in 30s: %q", p.stderrString())
		}
		time.Sleep(10 * time.Millisecond)
	}
	p.cmd.Process.Signal(syscall.SIGINT)
	if code := p.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("exit %d after SIGINT; stderr:\n%s", code, p.stderrString())
	}
	line := p.stdout.waitLine(t, `"workload"`, time.Second)
	var rep benchReport
	if err := json.Unmarshal([]byte(line), &rep); err != nil || !rep.Interrupted || rep.Count == 0 || rep.Seconds > 50 {
		t.Errorf("report after SIGINT (%v): %s", err, line)
	}
}

// TestBenchNullServer runs the uncontended workload against the null
// server, as PERFORMANCE.md's ceiling is measured: the same load generator
// reads the same JSON and the server's CPU from its /metrics.
func TestBenchNullServer(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	addr := make(chan string, 1)
	done := make(chan error, 1)
	go func() { done <- runBenchNull(ctx, "127.0.0.1:0", func(a string) { addr <- a }) }()
	url := "http://" + <-addr
	r := runMain(t, map[string]string{"DLM_URL": url, "DLM_KEY": "any"}, "bench", "--json", "--duration", "1s", "--clients", "4", "uncontended")
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("null server: %v", err)
	}
	var rep benchReport
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &rep) != nil {
		t.Fatalf("dlm bench against the null server: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	checkReport(t, &rep, "uncontended", "acquire", "release")
	if rep.Server == nil || rep.Server.CPUPerUnitMicros <= 0 {
		t.Errorf("server report %+v: want the CPU per cycle read from the null server's /metrics", rep.Server)
	}
}
