package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/dlmhq/dlm/internal/buildinfo"
)

// result is what one in-process run of dlm did.
type result struct {
	code           int
	stdout, stderr string
}

// runMain runs dlm in-process with args and the environment env (nothing
// else from the real environment).
func runMain(t testing.TB, env map[string]string, args ...string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	m := &Main{Stdout: &stdout, Stderr: &stderr, Getenv: func(k string) string { return env[k] }}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	code := m.exit(m.Run(ctx, args))
	return result{code, stdout.String(), stderr.String()}
}

func TestUsageErrors(t *testing.T) {
	env := map[string]string{"DLM_KEY": "k"}
	for _, tt := range []struct {
		name string
		args []string
		code int
		want string // in stderr
	}{
		{"no command", nil, exitUsage, "Usage: dlm"},
		{"unknown command", []string{"frobnicate"}, exitUsage, `unknown command "frobnicate"`},
		{"unknown global flag", []string{"--frob", "ls"}, exitUsage, "flag provided but not defined"},
		{"run without --", []string{"run", "a", "true"}, exitUsage, "missing --"},
		{"run without command", []string{"run", "a", "--"}, exitUsage, "no command after --"},
		{"run without name", []string{"run", "--", "true"}, exitUsage, "Usage: dlm run"},
		{"dry run of two names", []string{"acquire", "--dry-run", "a", "b"}, exitUsage, "--dry-run takes one name"},
		{"bad wait", []string{"acquire", "a", "--wait", "-1s"}, exitUsage, "try once"},
		{"bad scope", []string{"status", "a", "--scope", "planet"}, exitUsage, "tenant or global"},
		{"tenants nonsense", []string{"tenants", "keys", "drop"}, exitUsage, "usage: dlm tenants"},
		{"help", []string{"--help"}, 0, "Usage: dlm"},
		{"command help", []string{"run", "--help"}, 0, "DLM_FENCING_TOKEN"},
		{"help after name", []string{"status", "a", "-h"}, 0, "Usage: dlm status"},
		{"acquire help says it waits forever", []string{"acquire", "--help"}, 0, "forever (the default)"},
		{"bad lock name", []string{"acquire", "no spaces"}, exitUsage, `lock "no spaces"`},
		{"bad lock name for run", []string{"run", "a*", "--", "true"}, exitUsage, `lock "a*"`},
		{"bad lock name for status", []string{"status", ""}, exitUsage, `lock ""`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := runMain(t, env, tt.args...)
			if r.code != tt.code || !strings.Contains(r.stderr, tt.want) {
				t.Errorf("dlm %q: exit %d, stderr:\n%s\nwant exit %d and %q", tt.args, r.code, r.stderr, tt.code, tt.want)
			}
		})
	}
}

func TestExitCodes(t *testing.T) {
	m := &Main{Stderr: new(bytes.Buffer)}
	for _, tt := range []struct {
		err  error
		code int
	}{
		{nil, 0},
		{errors.New("boom"), exitError},
		{fmt.Errorf("run: %w", errUsage), exitUsage},
		{&exitCodeError{code: 3, quiet: true, err: errors.New("command exited with status 3")}, 3},
	} {
		if got := m.exit(tt.err); got != tt.code {
			t.Errorf("exit(%v) = %d, want %d", tt.err, got, tt.code)
		}
	}
}

// TestVersion: dlm version and dlm --version print the build, as text or
// with --json as the object that /healthz and dlm_build_info agree with.
func TestVersion(t *testing.T) {
	bi := buildinfo.Get()
	text := fmt.Sprintf("dlm %s (revision %s, %s)\n", bi.Version, bi.Revision, bi.Go)
	for _, args := range [][]string{{"version"}, {"--version"}, {"--version", "ls"}} {
		if r := runMain(t, nil, args...); r.code != 0 || r.stdout != text {
			t.Errorf("dlm %q: exit %d, stdout %q; want 0, %q", args, r.code, r.stdout, text)
		}
	}
	for _, args := range [][]string{{"version", "--json"}, {"--json", "--version"}} {
		r := runMain(t, nil, args...)
		var got buildinfo.Info
		if err := json.Unmarshal([]byte(r.stdout), &got); r.code != 0 || err != nil || got != bi {
			t.Errorf("dlm %q: exit %d, stdout %q (%v); want %+v", args, r.code, r.stdout, err, bi)
		}
	}
	if r := runMain(t, nil, "version", "extra"); r.code != exitUsage {
		t.Errorf("dlm version extra: exit %d, want %d", r.code, exitUsage)
	}
}
