package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dlmhq/dlm/dlmtest"
	"github.com/dlmhq/dlm/wire"
)

func TestMain(m *testing.M) { dlmtest.Main(m) }

// startServe runs dlm serve on a free port with dataDir, logging at debug
// level. env adds variables (NAME=value).
func startServe(t *testing.T, dataDir string, env ...string) *dlmtest.Server {
	t.Helper()
	return dlmtest.MustServe(t, dlmtest.ServeOptions{Dir: dataDir, Args: []string{"--log-level", "debug"}, Env: env})
}

// call sends a request with key and returns the status and decoded body.
func call(t *testing.T, method, url, key, body string) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	var m map[string]any
	b, _ := io.ReadAll(resp.Body)
	if len(b) > 0 {
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("%s %s: %d %q is not JSON", method, url, resp.StatusCode, b)
		}
	}
	return resp.StatusCode, m
}

func mustCall(t *testing.T, want int, method, url, key, body string) map[string]any {
	t.Helper()
	status, m := call(t, method, url, key, body)
	if status != want {
		t.Fatalf("%s %s = %d %v, want %d", method, url, status, m, want)
	}
	return m
}

// readCredentials reads the credentials.json of a first start in dir and
// checks that only its owner may read it.
func readCredentials(t *testing.T, dir string) wire.Credentials {
	t.Helper()
	fi, err := os.Stat(filepath.Join(dir, wire.CredentialsFile))
	if err != nil {
		t.Fatal(err)
	}
	if mode := fi.Mode().Perm(); mode != 0o600 {
		t.Errorf("credentials.json mode %v, want 0600", mode)
	}
	return dlmtest.Credentials(t, dir)
}

func TestServeFirstStart(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	p := startServe(t, dir)
	creds := readCredentials(t, dir)
	if creds.Tenant != "default" || creds.AdminKey == "" || creds.TenantKeyID == "" {
		t.Errorf("credentials = %+v, want the default tenant's key and the admin key made", creds)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("data dir: %v, %v; want mode 0700", fi.Mode(), err)
	}
	out := p.Stdout.String()
	for _, want := range []string{creds.AdminKey, creds.TenantKey, "admin key:", `tenant "default" key:`} {
		if !strings.Contains(out, want) {
			t.Errorf("first start output lacks %q:\n%s", want, out)
		}
	}
	mustCall(t, 200, "GET", p.URL+"/healthz", "", "")
	mustCall(t, 200, "GET", p.URL+"/readyz", "", "")
	mustCall(t, 200, "GET", p.URL+"/v1/tenants", creds.AdminKey, "")
	mustCall(t, 200, "POST", p.URL+"/v1/locks/a/acquire", creds.TenantKey, `{"holder_id":"h"}`)
	checkMetrics(t, p.URL)
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("exit after SIGTERM: %v", err)
	}

	// The second start shows no keys, and the keys still work.
	p = startServe(t, dir)
	if out := p.Stdout.String(); strings.Contains(out, "key") {
		t.Errorf("second start printed keys:\n%s", out)
	}
	if got := readCredentials(t, dir); got != creds {
		t.Errorf("credentials changed: %+v, want %+v", got, creds)
	}
	mustCall(t, 200, "GET", p.URL+"/v1/locks/a", creds.TenantKey, "")
	if err := p.Signal(syscall.SIGINT); err != nil {
		t.Fatalf("exit after SIGINT: %v", err)
	}
}

func TestServeAdminKeyFromEnv(t *testing.T) {
	dir := t.TempDir()
	const admin = "my-own-admin-key-0123456789"
	p := startServe(t, dir, "DLM_ADMIN_KEY="+admin)
	if strings.Contains(p.Stdout.String(), admin) {
		t.Errorf("the admin key from the environment was printed")
	}
	b, err := os.ReadFile(filepath.Join(dir, wire.CredentialsFile))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), admin) || strings.Contains(string(b), "admin_key") {
		t.Errorf("credentials.json keeps the admin key the operator gave:\n%s", b)
	}
	if c := readCredentials(t, dir); c.TenantKey == "" {
		t.Errorf("credentials = %+v, want the tenant key the server made", c)
	}
	mustCall(t, 200, "GET", p.URL+"/v1/tenants", admin, "")
	mustCall(t, 401, "GET", p.URL+"/v1/tenants", "some-other-key-0123456789", "")
	r := runMain(t, map[string]string{"DLM_URL": p.URL, "DLM_DATA_DIR": dir}, "tenants", "list")
	if r.code != exitError || !strings.Contains(r.stderr, "no admin key") || !strings.Contains(r.stderr, "DLM_KEY") {
		t.Errorf("dlm tenants list without the admin key: exit %d, stderr %q; want an error that says to pass it", r.code, r.stderr)
	}
}

// TestServeFirstStartFailsCleanly: a first start that cannot listen, or
// is given an admin key too short, exits non-zero before it has created
// the data directory or printed a key.
func TestServeFirstStartFailsCleanly(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	for _, tt := range []struct {
		name   string
		listen string
		env    []string
		want   string // in stderr
	}{
		{"port taken", taken.Addr().String(), nil, "address already in use"},
		{"admin key too short", "", []string{"DLM_ADMIN_KEY=short"}, "DLM_ADMIN_KEY: must be at least"},
		{"TLS certificate missing", "", []string{"DLM_TLS_CERT=/nonexistent/cert.pem", "DLM_TLS_KEY=/nonexistent/key.pem"}, "/nonexistent/cert.pem"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data")
			p, err := dlmtest.StartServe(t, dlmtest.ServeOptions{Dir: dir, Listen: tt.listen, Env: tt.env})
			if !errors.Is(err, dlmtest.ErrExited) {
				t.Fatalf("dlm serve = %v, want it to exit", err)
			}
			if p.Wait() == nil {
				t.Error("dlm serve exited 0")
			}
			if !strings.Contains(p.Stderr.String(), tt.want) {
				t.Errorf("stderr lacks %q:\n%s", tt.want, p.Stderr.String())
			}
			if out := p.Stdout.String(); strings.Contains(out, "key") {
				t.Errorf("a failed start printed keys:\n%s", out)
			}
			if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("a failed start left the data directory %s (%v)", dir, err)
			}
		})
	}
}

// TestServeCrashSafety kills the server with SIGKILL while it holds leases
// and restarts it on the same data: the leases are held until their expiry
// and tokens continue above every earlier one.
func TestServeCrashSafety(t *testing.T) {
	dir := t.TempDir()
	p := startServe(t, dir)
	key := readCredentials(t, dir).TenantKey
	acq := func(p *dlmtest.Server, name, body string) map[string]any {
		return mustCall(t, 200, "POST", p.URL+"/v1/locks/"+name+"/acquire", key, body)
	}
	var warm float64
	for range 2 {
		l := acq(p, "crash%2Flong", `{"holder_id":"warmup"}`)
		mustCall(t, 200, "DELETE", p.URL+"/v1/leases/"+l["lease_id"].(string), key, "")
		warm = l["fencing_token"].(float64)
	}
	long := acq(p, "crash%2Flong", `{"holder_id":"survivor","ttl_ms":600000}`)
	short := acq(p, "crash%2Fshort", `{"holder_id":"brief","ttl_ms":2000}`)
	longID, longTok := long["lease_id"].(string), long["fencing_token"].(float64)
	if longTok <= warm {
		t.Fatalf("token before the crash = %v, not above the warm-up's %v", longTok, warm)
	}

	if err := p.Signal(syscall.SIGKILL); err == nil {
		t.Fatal("SIGKILL: process exited cleanly")
	}
	p = startServe(t, dir)

	got := mustCall(t, 200, "GET", p.URL+"/v1/leases/"+longID, key, "")
	if got["fencing_token"] != longTok || got["holder_id"] != "survivor" || got["expires_at"] != long["expires_at"] {
		t.Errorf("lease after restart = %v, want %v", got, long)
	}
	in := mustCall(t, 200, "GET", p.URL+"/v1/locks/crash%2Flong", key, "")
	if hs := in["holders"].([]any); len(hs) != 1 || in["fencing_token"] != longTok {
		t.Errorf("inspect after restart = %v", in)
	}
	if status, m := call(t, "POST", p.URL+"/v1/locks/crash%2Flong/acquire", key, `{"holder_id":"intruder"}`); status != 409 {
		t.Errorf("conflicting acquire after restart = %d %v, want 409", status, m)
	}
	// The short lease is held until it expires, then the next grant gets a
	// higher token. A blocking acquire waits for that expiry.
	next := acq(p, "crash%2Fshort", `{"holder_id":"next","wait_ms":30000}`)
	if next["fencing_token"].(float64) <= short["fencing_token"].(float64) {
		t.Errorf("token after expiry = %v, want above %v", next["fencing_token"], short["fencing_token"])
	}
	mustCall(t, 200, "DELETE", p.URL+"/v1/leases/"+longID, key, "")
	if l := acq(p, "crash%2Flong", `{"holder_id":"after"}`); l["fencing_token"].(float64) <= longTok {
		t.Errorf("token after restart and release = %v, want above %v", l["fencing_token"], longTok)
	}
}

// TestServeSIGTERMWithWaiter: SIGTERM answers a queued acquire 503, exits
// 0, and the lease it waited on survives the restart.
func TestServeSIGTERMWithWaiter(t *testing.T) {
	dir := t.TempDir()
	p := startServe(t, dir)
	key := readCredentials(t, dir).TenantKey
	held := mustCall(t, 200, "POST", p.URL+"/v1/locks/busy/acquire", key, `{"holder_id":"holder","ttl_ms":600000}`)

	type answer struct {
		status int
		body   map[string]any
	}
	waiter := make(chan answer, 1)
	go func() {
		req, _ := http.NewRequest("POST", p.URL+"/v1/locks/busy/acquire", strings.NewReader(`{"holder_id":"waiter","wait_ms":120000}`))
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			waiter <- answer{status: -1, body: map[string]any{"err": err.Error()}}
			return
		}
		defer resp.Body.Close()
		var m map[string]any
		json.NewDecoder(resp.Body).Decode(&m)
		waiter <- answer{resp.StatusCode, m}
	}()
	dlmtest.Eventually(t, "the waiter is queued", func() bool {
		in := mustCall(t, 200, "GET", p.URL+"/v1/locks/busy", key, "")
		return len(in["waiters"].([]any)) == 1
	})
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("exit after SIGTERM: %v", err)
	}
	a := <-waiter
	if code, _ := a.body["error"].(map[string]any)["code"].(string); a.status != 503 || code != "unavailable" {
		t.Fatalf("queued acquire at SIGTERM = %d %v, want 503 unavailable", a.status, a.body)
	}

	p = startServe(t, dir)
	if l := mustCall(t, 200, "GET", p.URL+"/v1/leases/"+held["lease_id"].(string), key, ""); l["holder_id"] != "holder" {
		t.Errorf("lease after restart = %v", l)
	}
}

// TestServeInProcess runs Main.Run in the test's process and stops it by
// cancelling its context.
func TestServeInProcess(t *testing.T) {
	dir := t.TempDir()
	pr, pw := io.Pipe()
	var stderr dlmtest.Buffer
	m := &Main{Stdin: strings.NewReader(""), Stdout: pw, Stderr: &stderr, Getenv: func(string) string { return "" }}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- m.Run(ctx, []string{"serve", "--listen", "127.0.0.1:0", "--data-dir", dir})
		pw.Close()
	}()
	var url string
	sc := bufio.NewScanner(pr)
	for sc.Scan() {
		if u, ok := strings.CutPrefix(sc.Text(), "dlm: listening on "); ok {
			url = u
			break
		}
	}
	go io.Copy(io.Discard, pr)
	if url == "" {
		t.Fatalf("no address printed: %v\n%s", <-done, stderr.String())
	}
	mustCall(t, 200, "GET", url+"/healthz", "", "")
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run after cancel = %v", err)
	}
}

func TestServeConfig(t *testing.T) {
	env := func(kv ...string) func(string) string {
		return func(k string) string {
			for i := 0; i+1 < len(kv); i += 2 {
				if kv[i] == k {
					return kv[i+1]
				}
			}
			return ""
		}
	}
	parse := func(getenv func(string) string, args ...string) (*serveConfig, error) {
		m := &Main{Stdout: io.Discard, Stderr: io.Discard, Getenv: getenv}
		return m.parseServeFlags(args)
	}
	c, err := parse(env())
	if err != nil || c.listen != "127.0.0.1:7070" || c.dataDir != "./dlm-data" || c.maxTTL != 24*time.Hour ||
		c.maxWait != 5*time.Minute || c.maxLeasesPerTenant != 100_000 || c.maxWaitersPerTenant != 10_000 ||
		c.eventRetention != 168*time.Hour || c.eventRetentionCount != 1_000_000 {
		t.Errorf("defaults = %+v, %v", c, err)
	}
	c, err = parse(env("DLM_EVENT_RETENTION", "1h", "DLM_EVENT_RETENTION_COUNT", "10"), "--event-retention-count", "20")
	if err != nil || c.eventRetention != time.Hour || c.eventRetentionCount != 20 {
		t.Errorf("event retention = %+v, %v", c, err)
	}
	c, err = parse(env("DLM_LISTEN", "0.0.0.0:1", "DLM_DATA_DIR", "/env", "DLM_MAX_TTL", "1h", "DLM_MAX_LEASES_PER_TENANT", "5"))
	if err != nil || c.listen != "0.0.0.0:1" || c.dataDir != "/env" || c.maxTTL != time.Hour || c.maxLeasesPerTenant != 5 {
		t.Errorf("from the environment = %+v, %v", c, err)
	}
	c, err = parse(env("DLM_TLS_CERT", "env.pem", "DLM_TLS_KEY", "env.key"), "--tls-key", "flag.key")
	if err != nil || c.tlsCert != "env.pem" || c.tlsKey != "flag.key" {
		t.Errorf("TLS files = %q, %q, %v; want env.pem, flag.key", c.tlsCert, c.tlsKey, err)
	}
	c, err = parse(env("DLM_LISTEN", "0.0.0.0:1", "DLM_MAX_TTL", "1h"), "--listen", "127.0.0.1:2", "--max-ttl", "2h")
	if err != nil || c.listen != "127.0.0.1:2" || c.maxTTL != 2*time.Hour {
		t.Errorf("flags over the environment = %+v, %v", c, err)
	}
	for _, bad := range []struct {
		env  []string
		args []string
	}{
		{env: []string{"DLM_MAX_TTL", "forever"}},
		{env: []string{"DLM_MAX_WAITERS_PER_TENANT", "many"}},
		{args: []string{"--max-ttl", "10ms"}},
		{args: []string{"--max-wait", "0s"}},
		{args: []string{"--max-leases-per-tenant", "0"}},
		{args: []string{"--event-retention", "0s"}},
		{args: []string{"--log-level", "loud"}},
		{args: []string{"--log-format", "xml"}},
		{args: []string{"--bogus"}},
		{args: []string{"extra"}},
		{args: []string{"--tls-cert", "cert.pem"}}, // without its key
		{env: []string{"DLM_TLS_KEY", "key.pem"}},  // without its certificate
	} {
		if _, err := parse(env(bad.env...), bad.args...); err == nil {
			t.Errorf("env %v args %v: no error", bad.env, bad.args)
		}
	}

	// Nothing listens on port 1: the PostgreSQL store is opened, and fails.
	m := &Main{Stdout: io.Discard, Stderr: io.Discard, Getenv: env("DLM_POSTGRES_URL", "postgres://postgres@127.0.0.1:1/x?sslmode=disable")}
	if err := m.Run(context.Background(), []string{"serve", "--listen", "127.0.0.1:0", "--data-dir", t.TempDir()}); err == nil || !strings.Contains(err.Error(), "open PostgreSQL store") {
		t.Errorf("serve with DLM_POSTGRES_URL = %v", err)
	}
}

// checkMetrics checks that /metrics answers without a key, in the
// Prometheus text format, with dlm's series filled in by the acquire before.
func checkMetrics(t *testing.T, url string) {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("GET /metrics = %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	for _, want := range []string{
		"dlm_grants_total 1\n",
		`dlm_leases{mode="exclusive"} 1` + "\n",
		`dlm_http_requests_total{code="200",method="POST",route="/v1/locks/{name...}/acquire"} 1` + "\n",
		"dlm_commit_batch_size_count ",
		"go_goroutines ",
		"process_resident_memory_bytes ",
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

// TestServeRefusesDamagedData damages the data directory after a SIGKILL,
// as a disk or an operator can, and checks that dlm serve refuses to start
// with a message naming the file, instead of starting without acknowledged
// changes (and repeating their fencing tokens) or making new keys.
func TestServeRefusesDamagedData(t *testing.T) {
	dir := t.TempDir()
	p := startServe(t, dir)
	key := readCredentials(t, dir).TenantKey
	for i := range 20 {
		l := mustCall(t, 200, "POST", p.URL+"/v1/locks/damage%2F"+strconv.Itoa(i)+"/acquire", key, `{"holder_id":"h"}`)
		if i%2 == 0 {
			mustCall(t, 200, "DELETE", p.URL+"/v1/leases/"+l["lease_id"].(string), key, "")
		}
	}
	if err := p.Signal(syscall.SIGKILL); err == nil {
		t.Fatal("SIGKILL: process exited cleanly")
	}
	db := filepath.Join(dir, "dlm.db")
	refused := func(t *testing.T, file string) {
		t.Helper()
		r := runMain(t, map[string]string{"DLM_DATA_DIR": dir, "DLM_LISTEN": "127.0.0.1:0"}, "serve")
		if r.code == 0 || !strings.Contains(r.stderr, file) || !strings.Contains(r.stderr, "backup") {
			t.Fatalf("dlm serve on damaged data: exit %d, stderr %q; want a refusal naming %s", r.code, r.stderr, file)
		}
	}

	f, err := os.OpenFile(db+".commitlog", os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{0xde, 0xad, 0xbe, 0xef}, 4096+100); err != nil {
		t.Fatal(err)
	}
	f.Close()
	refused(t, db+".commitlog")

	for _, suffix := range []string{"", "-wal", "-shm", ".commitlog", ".commitlog2"} {
		os.Remove(db + suffix)
	}
	refused(t, filepath.Join(dir, wire.CredentialsFile))
}
