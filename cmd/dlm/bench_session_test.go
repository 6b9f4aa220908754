package main

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/dlmhq/dlm/dlmtest/testserver"
)

func TestBenchSession(t *testing.T) {
	s := testserver.New(t, nil)
	for _, tc := range []struct {
		workload string
		args     []string
		ops      []string
	}{
		{"uncontended", []string{"--duration", "1s", "--clients", "4"}, []string{"acquire", "release"}},
		{"uncontended", []string{"--duration", "1s", "--clients", "2", "--pipeline", "3"}, []string{"acquire", "release"}},
		{"contended", []string{"--duration", "1s", "--clients", "4"}, []string{"acquire", "release"}},
		{"hold", []string{"--leases", "100", "--clients", "4"}, []string{"acquire"}},
	} {
		rep, _ := runBenchJSON(t, s, append([]string{tc.workload, "--protocol", "session"}, tc.args...)...)
		checkReport(t, rep, tc.workload, tc.ops...)
		held := heldLocks(t, s, rep.Prefix)
		if want := map[string]int{"hold": 100}[tc.workload]; len(held) != want {
			t.Errorf("%s %v: %d locks held after the run, want %d", tc.workload, tc.args, len(held), want)
		}
	}
	if r := runMain(t, tenantEnv(s), "bench", "mixed", "--protocol", "session"); r.code != exitUsage {
		t.Errorf("mixed over a session: exit %d, want usage", r.code)
	}
	if r := runMain(t, tenantEnv(s), "bench", "uncontended", "--pipeline", "2"); r.code != exitUsage {
		t.Errorf("--pipeline over http: exit %d, want usage", r.code)
	}
}

func TestBenchNullServerSession(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	addr := make(chan string, 1)
	done := make(chan error, 1)
	go func() { done <- runBenchNull(ctx, "127.0.0.1:0", func(a string) { addr <- a }) }()
	url := "http://" + <-addr
	r := runMain(t, map[string]string{"DLM_URL": url, "DLM_KEY": "any"}, "bench", "--json", "--duration", "1s", "--clients", "4", "--protocol", "session", "uncontended")
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("null server: %v", err)
	}
	var rep benchReport
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &rep) != nil {
		t.Fatalf("dlm bench --protocol session against the null server: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	checkReport(t, &rep, "uncontended", "acquire", "release")
}
